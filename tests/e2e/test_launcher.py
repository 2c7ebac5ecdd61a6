"""Issue #11, part 1: every `ray` cluster-launcher command, in both head modes, as a user types it.

One cluster per head mode goes through the commands in the order a user meets them. Each check
says what the command means on SLURM (the user guide's table of launcher commands is the same
list). The site has tmux and no screen: `--tmux` works on the login node, `--screen` is refused
with a clear message, and both are refused in a head's SLURM job (a session would end with the
job step).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import Cluster, wait_for

SCRIPT = 'import json, sys\nprint("ARGS " + json.dumps(sys.argv[1:]))\n'


def head_start(cluster: Cluster) -> tuple[str, float]:
    """Which head runs: its node id and the moment it published its address."""
    head = cluster.head()
    return head["node_id"], head["started"]


def worker_ids(cluster: Cluster) -> set[str]:
    return {j.job_id for j in cluster.jobs("worker")}


def exec_out(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.ray("exec", *args[:-1], str(cluster.config_path), args[-1], timeout=180,
                       check=check)  # fmt: skip


@pytest.mark.parametrize("head_mode", ["login", "slurm"])
def test_every_launcher_command(make_cluster, site_nodes, workdir, head_mode):
    def one_min_worker(cfg):
        cfg["available_node_types"]["cpu"]["min_workers"] = 1

    cluster = make_cluster(f"e2e-launch-{head_mode}", head_mode=head_mode, max_workers=1,
                           change=one_min_worker)  # fmt: skip
    user, config = cluster.user, str(cluster.config_path)
    cluster.up()
    head = head_start(cluster)
    head_ip = cluster.head()["ip"]
    head_host = cluster.head()["host"]
    if head_mode == "login":
        assert head_host == socket.gethostname()
    else:
        assert head_host in site_nodes and site_nodes[head_host] == head_ip

    # --- ray up again: nothing changed, nothing restarts; --no-restart neither --------------
    cluster.ray("up", "-y", config, timeout=420)
    assert head_start(cluster) == head, "a re-run of ray up restarted an unchanged head"
    cluster.ray("up", "-y", "--no-restart", config, timeout=420)
    assert head_start(cluster) == head
    # --restart-only: the head's Ray runtime is its job (or process), so it is a new head
    cluster.ray("up", "-y", "--restart-only", config, timeout=420)
    assert head_start(cluster) != head, "ray up --restart-only did not restart the head"
    head = head_start(cluster)
    head_ip, head_host = cluster.head()["ip"], cluster.head()["host"]
    # the old head's job ends (scancel, then its job script's cleanup: COMPLETING for a moment)
    heads = 1 if head_mode == "slurm" else 0
    wait_for(lambda: len(cluster.jobs("head")) == heads, 90, "the old head's job to end")

    # --- addresses ----------------------------------------------------------------------------
    assert cluster.ray("get-head-ip", config).stdout.split()[-1] == head_ip
    workers = wait_for(lambda: worker_ids(cluster), 180, "the min worker's job")
    wait_for(lambda: cluster.ray("get-worker-ips", config).stdout.split(), 180, "a worker ip")
    worker_ips = cluster.ray("get-worker-ips", config).stdout.split()
    assert set(worker_ips) <= set(site_nodes.values()), worker_ips

    # --- ray status: on the head through ray exec, and here with ray-slurm env ----------------
    assert "head" in exec_out(cluster, "ray status").stdout
    wait_for(lambda: "1 cpu" in exec_out(cluster, "ray status").stdout, 180, "the worker in Ray")
    local = user.run([user.bin("ray"), "status"], env=cluster.env(), timeout=60).stdout
    assert "1 cpu" in local and "head" in local

    # --- ~ is the user's home, for copies and commands alike --------------------------------
    here = "~/" + str(workdir.relative_to(user.home))  # this test's directory, seen from ~
    upload = user.write(workdir / "local.txt", "uploaded by rsync-up\n")
    cluster.ray("rsync-up", config, str(upload), f"{here}/up.txt")
    assert (workdir / "up.txt").read_text() == "uploaded by rsync-up\n"
    assert exec_out(cluster, f"cat {here}/up.txt").stdout.count("uploaded by rsync-up") == 1
    exec_out(cluster, f"hostname > {here}/made.txt")
    down = workdir / "down.txt"
    cluster.ray("rsync-down", config, f"{here}/made.txt", str(down))
    assert down.read_text().strip() == head_host  # the command ran on the head's node

    # --- ray submit with script arguments (Ray joins them into one command line) -------------
    script = user.write(workdir / "args.py", SCRIPT)
    out = cluster.ray("submit", config, str(script), "first", "second").stdout
    assert 'ARGS ["first", "second"]' in out

    # --- ray attach: a shell on the head --------------------------------------------------------
    attach = cluster.ray("attach", config, timeout=120, input="echo ATTACHED-$(hostname)\nexit\n")
    assert f"ATTACHED-{head_host}" in attach.stdout

    # --- ray exec --screen / --tmux ----------------------------------------------------------
    assert shutil.which("screen") is None, "the local site is meant to lack screen"
    screen = exec_out(cluster, "--screen", "echo never", check=False)
    assert screen.returncode != 0 and "Traceback" not in screen.stderr
    tmux = exec_out(cluster, "--tmux", f"echo TMUX-RAN > {here}/tmux.txt", check=False)
    if head_mode == "login":
        assert "screen is not installed on this login node" in screen.stdout + screen.stderr
        assert tmux.returncode == 0, tmux.stderr[-2000:]
        wait_for(lambda: (workdir / "tmux.txt").exists(), 60, "the tmux command")
        assert (workdir / "tmux.txt").read_text() == "TMUX-RAN\n"
        user.run(["tmux", "kill-server"], check=False)
    else:
        for refused, tool in ((screen, "screen"), (tmux, "tmux")):
            assert f"--{tool} keeps a session" in refused.stdout + refused.stderr
        assert tmux.returncode != 0 and not (workdir / "tmux.txt").exists()

    # --- ray monitor: the head's autoscaler log ----------------------------------------------
    monitor = user.run(["timeout", "10", user.bin("ray"), "monitor", config], check=False,
                       timeout=90)  # fmt: skip
    assert monitor.returncode == 124, monitor.stderr[-2000:]  # it follows the log until stopped
    assert f"==> {cluster.head()['autoscaler_log']} <==" in monitor.stdout, monitor.stdout[:500]
    assert "min_worker_nodes" in monitor.stdout, monitor.stdout[-1000:]  # the autoscaler's lines

    # --- ray dashboard: where the head's dashboard is, and the ssh -L line for a laptop ------
    dash = cluster.ray("dashboard", config, timeout=120).stdout
    address = f"{head_ip}:{cluster.head()['dashboard_port']}"
    assert f"The dashboard runs at http://{address}" in dash
    assert f"ssh -N -L 8265:{address} {user.name}@" in dash
    try:
        with urllib.request.urlopen(f"http://{address}/api/version", timeout=20) as answer:
            code = answer.status
    except urllib.error.HTTPError as refused:
        code = refused.code  # token auth may refuse an anonymous request: the server answered
    assert code in (200, 401, 403), code

    # --- ray exec --start on a running cluster changes nothing ------------------------------
    assert "STARTED-OK" in exec_out(cluster, "--start", "echo STARTED-OK").stdout
    assert head_start(cluster) == head

    # --- ray down --workers-only [--keep-min-workers]: the head stays -----------------------
    workers = worker_ids(cluster) or workers
    cluster.ray("down", "-y", "--workers-only", "--keep-min-workers", config)
    assert workers <= worker_ids(cluster), "--keep-min-workers cancelled the min worker"
    cluster.ray("down", "-y", "--workers-only", config)
    wait_for(lambda: not workers & worker_ids(cluster), 120, "the worker jobs to be cancelled")
    assert head_start(cluster) == head

    # --- ray exec --stop: the command runs, then the whole cluster stops, as ray down --------
    assert "LAST-COMMAND" in exec_out(cluster, "--stop", "echo LAST-COMMAND").stdout
    wait_for(lambda: not cluster.jobs(), 120, "every job of the cluster to end")
    gone = user.run([user.bin("ray-slurm"), "env", config], timeout=30, check=False)
    assert gone.returncode == 1, "the head still answers after ray exec --stop"

    # --- ray exec --start on a stopped cluster starts it (as ray up) -------------------------
    assert "AGAIN" in exec_out(cluster, "--start", "echo AGAIN").stdout
    assert head_start(cluster) != head
    cluster.down()
    assert cluster.jobs() == []
