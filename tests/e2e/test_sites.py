"""Issue #13, part 1: several local sites side by side, each from its layout file (issue #25:
the GPU centre on Debian 13, Slurm 24.11, in a root filesystem of its own).

`make test` brings up the GPU centre (scripts/sites/gpu-centre.yaml) beside the campus site these
tests run on, and deploys it with its own inventory. Here: each site has the shape its layout
gives, and the two do not trust each other (a munge key each). A user's cluster on each site
(on the GPU centre a `num_gpus=1` task on a GPU worker; SLURM allocates the GPU on placeholder
devices, no real GPU exists) is the verify step of the molecule scenario `ssh-sites`, which
deploys both sites over SSH.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run

GPU_SITE = [str(REPO / "scripts" / "localsite"), "--site", "gpu-centre"]
GPU_STATE = Path("/var/tmp/rayhpc-gpu-centre")
CAMPUS_MUNGE_KEY = Path("/etc/munge/munge.key")  # campus uses the machine's munged


@pytest.fixture(scope="module", autouse=True)
def _gpu_centre_up() -> None:
    """The GPU centre must be up and deployed (make site-tests does it): a failure, not a skip."""
    status = run([*GPU_SITE, "status"], check=False)
    assert status.returncode == 0, f"the GPU centre is not up: {status.stdout}{status.stderr}"
    assert (GPU_STATE / "shared" / "ray-slurm.yaml").exists(), "the GPU centre is not deployed"


def gpu(*args: str, timeout: float = 120) -> str:
    """A command on the GPU centre's login node, as root."""
    return run([*GPU_SITE, "login", *args], timeout=timeout).stdout


def nodes(out: str) -> dict[str, tuple[str, ...]]:
    """``sinfo -N -h -o '%N %P %f'`` as node -> (partitions..., features)."""
    seen: dict[str, tuple[str, ...]] = {}
    for line in out.split("\n"):
        if line.strip():
            name, partition, features = line.split()
            seen[name] = (*seen.get(name, ())[:-1], partition.rstrip("*"), features)
    return seen


def test_each_site_has_its_layouts_shape() -> None:
    campus = nodes(run(["sinfo", "-N", "-h", "-o", "%N %P %f"]).stdout)
    assert set(campus) == {"n1", "n2", "n3"}
    assert set(campus["n1"][:-1]) == {"debug", "long", "scavenger"}
    centre = nodes(gpu("sinfo", "-N", "-h", "-o", "%N %P %f"))
    assert set(centre) == {"cpu1", "gpu1", "gpu2"}
    assert set(centre["cpu1"][:-1]) == {"service", "cpu"} and centre["cpu1"][-1] == "cpu"
    assert centre["gpu1"] == ("gpu", "gpu,a100")
    gres = dict(ln.split() for ln in gpu("sinfo", "-N", "-h", "-o", "%N %G").splitlines())
    assert gres == {"cpu1": "(null)", "gpu1": "gpu:2", "gpu2": "gpu:2"}
    config = gpu("scontrol", "show", "config")
    assert "ClusterName             = gpu-centre" in config
    assert "Slurmctld(primary) at gpulogin is UP" in gpu("scontrol", "ping")
    # Its hosts run Debian 13's Slurm 24.11, with slurmctld's per-user RPC rate limiter on;
    # campus runs the machine's Slurm 22.05.
    assert gpu("sinfo", "-V").startswith("slurm-wlm 24.11")
    assert re.search(r"(?m)^SlurmctldParameters\s+= rl_enable$", config)
    assert run(["sinfo", "-V"]).stdout.startswith("slurm-wlm 22.05")


def test_the_sites_do_not_trust_each_other() -> None:
    """A credential of the campus munge key (the machine's), sent by a SLURM client on the GPU
    centre's login node through a munged that holds that key, is refused by the GPU centre's
    slurmctld, which knows only its own key."""
    foreign = GPU_STATE / "foreign-munge"  # root's own, removed below
    shutil.rmtree(foreign, ignore_errors=True)
    foreign.mkdir(mode=0o755)  # munged wants its socket dir searchable; the key is 0600
    shutil.copy(CAMPUS_MUNGE_KEY, foreign / "munge.key")  # mode 0600 kept
    conf = (GPU_STATE / "etc" / "slurm.conf").read_text()
    (foreign / "slurm.conf").write_text(
        re.sub(r"(?m)^AuthInfo=.*$", f"AuthInfo=socket={foreign}/munge.socket", conf)
    )
    (foreign / "gres.conf").write_text((GPU_STATE / "etc" / "gres.conf").read_text())
    d = foreign
    script = (
        f"chown -R munge:munge {d} && runuser -u munge -- /usr/sbin/munged"
        f" --socket={d}/munge.socket --key-file={d}/munge.key --pid-file={d}/munged.pid"
        f" --log-file={d}/munged.log --seed-file={d}/munged.seed || exit 9;"
        f" SLURM_CONF={d}/slurm.conf squeue; rc=$?;"
        f" kill $(cat {d}/munged.pid); exit $rc"
    )  # fmt: skip
    log = GPU_STATE / "log" / "slurmctld.log"
    errors_before = log.read_text().count("Protocol authentication error")
    try:
        refused = run([*GPU_SITE, "login", "sh", "-c", script], check=False)
    finally:
        shutil.rmtree(foreign, ignore_errors=True)
    assert refused.returncode not in (0, 9), refused.stdout + refused.stderr
    assert "JOBID" not in refused.stdout
    assert log.read_text().count("Protocol authentication error") > errors_before
    # The GPU centre's own clients are answered (the same command, the site's own conf).
    assert "JOBID" in gpu("squeue")
