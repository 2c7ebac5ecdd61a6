"""Issue #2, test 1: the head on the login node, workers as SLURM jobs, scale up and down."""

import os
import socket
import sys

from conftest import BIN, parse_result, run, start_driver, wait_for


def gcs_open(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((ip, port)) == 0


def test_login_head_scales_slurm_workers_up_and_down(make_cluster, site_nodes):
    cluster = make_cluster("e2e-login")
    cluster.up()
    assert cluster.jobs() == [], "a login-node head must not be a SLURM job"
    env = cluster.env()
    head_ip, gcs_port = env["RAY_ADDRESS"].split(":")
    assert gcs_open(head_ip, int(gcs_port))

    # 4 tasks x 2 CPUs on a cluster with 0 CPUs: the autoscaler must submit worker jobs.
    driver = start_driver(cluster, tasks=4, seconds=8)
    workers = wait_for(lambda: cluster.jobs("worker"), 120, "worker jobs in squeue")
    assert all(j.name == "ray.e2e-login.worker.cpu" for j in workers)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]

    results = parse_result(out)
    assert len(results) == 4
    for host, ip in results:
        assert host in site_nodes, f"task ran on {host}, not on a compute node"
        assert ip == site_nodes[host], f"Ray reports {ip} for {host}, NodeAddr {site_nodes[host]}"

    status = cluster.exec("ray status").stdout
    assert "cpu" in status and "head" in status
    # `ray attach` opens a shell on the head: here the login node itself.
    attach = run([str(BIN / "ray"), "attach", str(cluster.config_path)], timeout=120,
                 input="echo ATTACHED-$(hostname)\nexit\n")  # fmt: skip
    assert f"ATTACHED-{socket.gethostname()}" in attach.stdout

    # Idle workers are cancelled after idle_timeout (15 s in the test config).
    wait_for(lambda: not cluster.jobs("worker"), 240, "idle worker jobs to be cancelled")
    for job in workers:  # each job's node-local Ray temp dir went with it
        assert not os.path.exists(f"/tmp/rs-{job.job_id}"), f"temp dir of job {job.job_id} left"

    cluster.down()
    assert cluster.jobs() == []
    assert not gcs_open(head_ip, int(gcs_port)), "the login head still runs after ray down"
    assert run([str(sys.executable), "-m", "ray_slurm.cli", "env", str(cluster.config_path)],
               timeout=30, check=False).returncode == 1  # fmt: skip
