"""Issue #13: what a site with SLURM accounting does to jobs, for real.

The campus site runs slurmdbd with MariaDB and ``AccountingStorageEnforce=associations,limits,qos``
(scripts/sites/campus.yaml): every job needs an association, and the QOS limits apply. QOS
``onejob`` allows one submitted job per user (sbatch beyond it is refused), ``twocpus`` two CPUs
for the whole QOS (a job beyond them waits, ``QOSGrpCpuLimit``). The provider names the type and
SLURM's words, backs the type off (which is what lets a cluster burst), and leaves no job behind.
"""

from __future__ import annotations

from conftest import run, start_driver, wait_for


def with_node_config(**settings):
    def change(cfg):
        cfg["available_node_types"]["cpu"]["node_config"].update(settings)

    return change


def log_line_with(cluster, text: str, timeout: float) -> str:
    log = wait_for(lambda: text in cluster.autoscaler_log() and cluster.autoscaler_log(),
                   timeout, f"{text!r} in the autoscaler log")  # fmt: skip
    return next(ln for ln in log.splitlines() if text in ln)


def test_the_site_enforces_associations() -> None:
    """The harness's own check that accounting is on: a job of an account the user lacks is
    refused by sbatch, and sacct knows the site's jobs."""
    proc = run(["runuser", "-u", "rsl-alice", "--", "sbatch", "--account=chemistry", "-D", "/tmp",
                "--wrap=true"], check=False)  # fmt: skip
    assert proc.returncode != 0 and "Invalid account" in proc.stderr, proc.stderr
    assert "accounting_storage/slurmdbd" in run(["scontrol", "show", "config"]).stdout
    job = run(["runuser", "-u", "rsl-alice", "--", "sbatch", "--parsable", "--wait", "-D", "/tmp",
               "--output=/dev/null",
               "--wrap=true"]).stdout.strip()  # fmt: skip
    sacct = ["sacct", "-j", job, "-X", "-n", "-P", "-o", "State,Account,User"]
    record = wait_for(lambda: run(sacct).stdout.strip(), 30, "sacct's record of the job")
    assert record == "COMPLETED|physics|rsl-alice"


def test_a_bad_account_is_refused_by_sbatch_named_and_backed_off(make_cluster):
    cluster = make_cluster("f-account", max_workers=1, change=with_node_config(account="nosuch"))
    cluster.up()
    driver = start_driver(cluster, tasks=1, seconds=1)
    try:
        refused = log_line_with(cluster, "node type cpu: sbatch failed", 90)
        assert "Invalid account or account/partition combination" in refused, refused
        # Backed off (how often SLURM is asked then: test_fault_queue's rejected sbatch).
        assert "cpu" in log_line_with(cluster, "no new job of this type for", 30)
        assert cluster.exec("ray status").returncode == 0
    finally:
        driver.kill()
    assert cluster.jobs() == []
    cluster.down()


def test_the_qos_job_limit_refuses_the_second_worker_and_the_first_does_the_work(make_cluster):
    cluster = make_cluster("f-qosjobs", max_workers=2, change=with_node_config(qos="onejob"))
    cluster.up()
    driver = start_driver(cluster, tasks=2, seconds=5)  # two workers wanted, one allowed
    try:
        refused = log_line_with(cluster, "node type cpu: sbatch failed", 120)
        assert "QOSMaxSubmitJobPerUserLimit" in refused, refused  # SLURM's own words
        assert len(cluster.jobs("worker")) == 1
        out, err = driver.communicate(timeout=300)  # both tasks ran, one after the other
        assert driver.returncode == 0, err[-2000:]
        assert len(cluster.jobs("worker")) <= 1
    finally:
        driver.kill()
    cluster.down()


def test_a_job_held_by_a_qos_limit_is_shown_then_cancelled_and_its_type_backed_off(make_cluster):
    held_by_qos = with_node_config(qos="twocpus", pending_timeout_s=20)
    cluster = make_cluster("f-qoscpu", max_workers=2, change=held_by_qos)
    cluster.up()
    driver = start_driver(cluster, tasks=2, seconds=60)  # two workers of 2 CPUs; the QOS has 2
    try:
        held = wait_for(lambda: [j for j in cluster.jobs("worker") if j.reason == "QOSGrpCpuLimit"],
                        120, "a worker job held by the QOS")[0]  # fmt: skip
        assert held.slurm_state == "PENDING"
        status = wait_for(lambda: "QOSGrpCpuLimit" in cluster.status() and cluster.status(),
                          30, "the QOS reason in ray-slurm status")  # fmt: skip
        assert held.job_id in status
        wait_for(lambda: held.job_id not in [j.job_id for j in cluster.jobs()], 90,
                 f"job {held.job_id} cancelled after its pending timeout")  # fmt: skip
        line = log_line_with(cluster, f"node type cpu unavailable: job {held.job_id} waited", 30)
        assert "(QOSGrpCpuLimit)" in line and "no new node of this type for" in line, line
        # The worker the QOS allows runs on.
        assert [j.slurm_state for j in cluster.jobs("worker")] == ["RUNNING"]
    finally:
        driver.kill()
    cluster.down()
