"""Issue #2, tests 1 and 4: the head on the login node, workers as SLURM jobs, scale up and down;
token authentication is on and a driver without the cluster's token is refused."""

import glob
import os
import socket
import stat

from conftest import gcs_open, parse_result, start_driver, wait_for

PROBE = "import ray; ray.init(); print('CPUS', ray.cluster_resources().get('CPU', 0))"


def check_token_is_required(cluster, env, workdir) -> None:
    token_file = env["RAY_AUTH_TOKEN_PATH"]
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(token_file)).st_mode) == 0o700
    assert "CPUS" in cluster.driver(PROBE, env=env, timeout=120).stdout

    wrong = cluster.user.write(workdir / "wrong-token", "not-the-token\n", 0o600)
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    for bad_env in ({**env, "RAY_AUTH_TOKEN_PATH": str(wrong)}, no_token):
        proc = cluster.driver(PROBE, env=bad_env, timeout=180, check=False)
        assert proc.returncode != 0 and "CPUS" not in proc.stdout, proc.stdout
    status = cluster.ray("status", f"--address={env['RAY_ADDRESS']}", timeout=120, check=False,
                         env=no_token)  # fmt: skip
    assert status.returncode != 0
    # The cluster speaks only TLS: a client with the token but without TLS is refused too.
    assert env["RAY_USE_TLS"] == "1"
    no_tls = {k: v for k, v in env.items() if not k.startswith(("RAY_TLS_", "RAY_USE_TLS"))}
    no_tls["RAY_gcs_rpc_server_reconnect_timeout_s"] = "10"  # it would retry for 60 s
    proc = cluster.driver(PROBE, env=no_tls, timeout=180, check=False)
    assert proc.returncode != 0 and "CPUS" not in proc.stdout, proc.stdout


def test_login_head_scales_slurm_workers_up_and_down(make_cluster, site_nodes, workdir):
    cluster = make_cluster("e2e-login")
    cluster.up()
    assert cluster.jobs() == [], "a login-node head must not be a SLURM job"
    env = cluster.env()
    head_ip, gcs_port = env["RAY_ADDRESS"].split(":")
    assert gcs_open(head_ip, int(gcs_port))
    check_token_is_required(cluster, env, workdir)

    # 4 tasks x 2 CPUs on a cluster with 0 CPUs: the autoscaler must submit worker jobs.
    driver = start_driver(cluster, tasks=4, seconds=8)
    workers = wait_for(lambda: cluster.jobs("worker"), 120, "worker jobs in squeue")
    assert all(j.name == "ray.e2e-login.worker.cpu" for j in workers)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]

    # Ray's own address commands, from the yaml as the user wrote it
    worker_ips = cluster.ray("get-worker-ips", str(cluster.config_path)).stdout.split()
    assert worker_ips and set(worker_ips) <= set(site_nodes.values()), worker_ips
    assert cluster.ray("get-head-ip", str(cluster.config_path)).stdout.split()[-1] == head_ip

    results = parse_result(out)
    assert len(results) == 4
    for host, ip in results:
        assert host in site_nodes, f"task ran on {host}, not on a compute node"
        assert ip == site_nodes[host], f"Ray reports {ip} for {host}, NodeAddr {site_nodes[host]}"

    status = cluster.exec("ray status").stdout
    assert "cpu" in status and "head" in status
    # `ray attach` opens a shell on the head: here the login node itself.
    attach = cluster.ray("attach", str(cluster.config_path), timeout=120,
                         input="echo ATTACHED-$(hostname)\nexit\n")  # fmt: skip
    assert f"ATTACHED-{socket.gethostname()}" in attach.stdout

    # Idle workers are cancelled after idle_timeout (15 s in the test config).
    wait_for(lambda: not cluster.jobs("worker"), 240, "idle worker jobs to be cancelled")
    for job in workers:  # each job's node-local Ray temp dir went with it
        assert not glob.glob(f"/tmp/rs-{job.job_id}.*"), f"temp dir of job {job.job_id} left"

    cluster.down()
    assert cluster.jobs() == []
    assert not gcs_open(head_ip, int(gcs_port)), "the login head still runs after ray down"
    env_after = cluster.user.run([cluster.user.bin("ray-slurm"), "env", str(cluster.config_path)],
                                 timeout=30, check=False)  # fmt: skip
    assert env_after.returncode == 1


def test_new_demand_wakes_the_autoscaler_between_its_loops(make_cluster, site_nodes):
    """Issue #14: the head's autoscaler acts on new demand at once (``demandwake``). With its
    loop 5 minutes apart, a task that needs a worker still runs within a minute: the loop was
    woken by the demand the GCS saw, and says so in its log."""
    cluster = make_cluster("e2e-wake", change=lambda cfg: cfg["provider"].update(
        autoscaler_interval_s=300))  # fmt: skip
    cluster.up()
    log = cluster.autoscaler_log()
    assert "the autoscaler acts on new demand within 100 ms" in log, log[-3000:]
    assert "new demand woke the autoscaler" not in log  # nothing asked for a worker yet

    driver = start_driver(cluster, tasks=1, seconds=1)
    out, err = driver.communicate(timeout=60)  # the next regular loop is minutes away
    assert driver.returncode == 0, err[-3000:]
    [(host, _)] = parse_result(out)
    assert host in site_nodes, f"the task ran on {host}, not on a new worker"
    assert "new demand woke the autoscaler" in cluster.autoscaler_log()
    cluster.down()
    assert cluster.jobs() == []
