"""Issue #4: jobs SLURM cannot start — full or DOWN partitions, rejected sbatch.

Faults are real: a partition set DOWN with scontrol keeps jobs pending with SLURM's own reason,
a partition that does not exist makes sbatch fail.
"""

import time

import pytest
from conftest import scontrol, start_driver, wait_for


@pytest.fixture
def long_partition_down():
    scontrol("update", "PartitionName=long", "State=DOWN")
    yield "long"
    scontrol("update", "PartitionName=long", "State=UP")


def autoscaler_log_with(cluster, text: str, timeout: float) -> str:
    return wait_for(lambda: text in cluster.autoscaler_log() and cluster.autoscaler_log(),
                    timeout, f"{text!r} in the autoscaler log")  # fmt: skip


def on_partition(partition: str, pending_timeout_s: int):
    def change(cfg):
        node_config = cfg["available_node_types"]["cpu"]["node_config"]
        node_config["partition"] = partition
        node_config["pending_timeout_s"] = pending_timeout_s

    return change


def test_pending_worker_is_cancelled_after_its_pending_timeout(make_cluster, long_partition_down):
    cluster = make_cluster("f-pending", max_workers=1, change=on_partition("long", 20))
    cluster.up()
    driver = start_driver(cluster, tasks=1, seconds=1)
    try:
        first = wait_for(lambda: cluster.jobs("worker"), 60, "a worker job in the queue")[0]
        assert first.slurm_state == "PENDING"
        # The pending reason is visible to the user and in the autoscaler's log.
        assert "PartitionDown" in wait_for(
            lambda: "PartitionDown" in cluster.status() and cluster.status(), 30, "reason"
        )
        wait_for(lambda: first.job_id not in [j.job_id for j in cluster.jobs()], 90,
                 f"job {first.job_id} to be cancelled after its pending timeout")  # fmt: skip
        log = autoscaler_log_with(cluster, "unavailable", 30)
        assert f"job {first.job_id} (node type cpu) is pending: PartitionDown" in log
        assert f"node type cpu unavailable: job {first.job_id} waited" in log
        # Backed off: no new job of the type at once, although the task still waits.
        time.sleep(15)
        assert not cluster.jobs("worker"), "a new job was submitted during the back-off"
    finally:
        driver.kill()
    cluster.down()


def test_head_stuck_in_the_queue_fails_ray_up_with_the_reason(make_cluster, long_partition_down):
    def head_on_long(cfg):
        cfg["provider"]["pending_timeout_s"] = 20
        cfg["available_node_types"]["head"]["node_config"]["partition"] = "long"

    cluster = make_cluster("f-headq", head_mode="slurm", change=head_on_long)
    started = time.monotonic()
    proc = cluster.ray("up", "-y", "--no-config-cache", str(cluster.config_path), timeout=180,
                       check=False)  # fmt: skip
    assert proc.returncode != 0
    assert time.monotonic() - started < 120
    output = proc.stdout + proc.stderr
    assert "PartitionDown" in output and "pending_timeout_s=20" in output
    assert "was cancelled" in output
    assert cluster.jobs() == [], "the head job must not be left in the queue"


def test_rejected_sbatch_names_the_type_and_backs_off(make_cluster):
    cluster = make_cluster("f-reject", max_workers=1, change=on_partition("nosuch", 600))
    cluster.up()
    driver = start_driver(cluster, tasks=1, seconds=1)
    try:
        log = autoscaler_log_with(cluster, "node type cpu: sbatch failed", 60)
        rejection = next(ln for ln in log.splitlines() if "node type cpu: sbatch failed" in ln)
        assert "invalid partition" in rejection.lower(), rejection  # SLURM's own words
        time.sleep(40)  # the autoscaler asks every 5 s; SLURM must be asked far less often
        # one line per sbatch SLURM refused (Ray logs each failed launch again in its own words)
        attempts = cluster.autoscaler_log().count("no new job of this type for")
        assert 1 <= attempts <= 2, f"{attempts} sbatch attempts in ~50 s: no back-off"
        assert "backed off" in cluster.autoscaler_log()
        # The autoscaler lives on: the head still answers.
        assert cluster.exec("ray status").returncode == 0
    finally:
        driver.kill()
    assert cluster.jobs() == []
    cluster.down()
