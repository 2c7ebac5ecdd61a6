"""Issue #13: what a site with SLURM accounting does to jobs, for real.

The campus site runs slurmdbd with MariaDB and ``AccountingStorageEnforce=associations,limits,qos``
(scripts/sites/campus.yaml): every job needs an association, and the QOS limits apply. QOS
``onejob`` allows one submitted job per user (sbatch beyond it is refused), ``twocpus`` two CPUs
for the whole QOS (a job beyond them waits, ``QOSGrpCpuLimit``). The provider names the type and
SLURM's words, backs the type off (which is what lets a cluster burst), and leaves no job behind.
Where the controller forgot an ended job before the provider saw it end, ``sacct`` tells how it
ended.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run, start_driver, wait_for
from test_fault_start import FAILING_SETUP


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


@pytest.fixture
def controller_forgets_at_once() -> Iterator[None]:
    """The site's slurmctld keeps an ended job for 2 s instead of 300 (``MinJobAge``, which busy
    sites lower; it then purges every 10 s): an ended job is gone from squeue and scontrol
    before a provider may look again. Put back afterwards."""
    conf = Path(os.environ["SLURM_CONF"])
    text = conf.read_text()
    assert "\nMinJobAge=300\n" in text
    conf.write_text(text.replace("\nMinJobAge=300\n", "\nMinJobAge=2\n"))
    try:
        run(["scontrol", "reconfigure"])
        yield
    finally:
        conf.write_text(text)
        run(["scontrol", "reconfigure"])
    assert "MinJobAge               = 300 sec" in run(["scontrol", "show", "config"]).stdout


# The head's SLURM backend, as the user: launch a worker job whose setup line fails, let the
# controller forget it unseen, then list the cluster's jobs once.
FORGOTTEN = """
import json, logging, subprocess, sys, time
from ray_slurm.backends.base import LaunchRequest
from ray_slurm.backends.slurm.backend import SlurmBackend
from ray_slurm.config import load_file
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.host.state import ClusterDir

logging.basicConfig(level=logging.INFO)  # what the head's autoscaler log would say
_, settings = load_file(sys.argv[1]).required()
cluster = ClusterDir(settings.state_dir, settings.cluster_name).create()
backend = SlurmBackend(settings, Slurm(), cluster)
job = backend.launch(LaunchRequest(settings.spec("cpu"), head_address="10.77.0.1:6379"))
squeue = ["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={job}"]
seen = set()
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    state = subprocess.run(squeue, capture_output=True, text=True).stdout.strip()
    if not state:
        break
    seen.add(state)
    time.sleep(0.5)
look = backend.list_nodes()  # what the core decides on: here, the type's failure
listed = [node.node_id for node in look.nodes]
failures = [[e.node.node_type, e.why] for e in look.ended if e.types_fault]
print("RESULT " + json.dumps({"job": job, "seen": sorted(seen), "listed": listed,
                              "failures": failures}))
"""


def test_a_failed_job_the_controller_forgot_unseen_is_read_from_sacct(
    make_cluster, controller_forgets_at_once
):
    def failing_setup(cfg):
        cfg["available_node_types"]["cpu"]["node_config"]["setup"] = FAILING_SETUP

    cluster = make_cluster("f-forgot", max_workers=1, change=failing_setup)  # never `ray up`
    proc = cluster.user.run([cluster.user.bin("python"), "-c", FORGOTTEN, str(cluster.config_path)],
                            timeout=180)  # fmt: skip
    result = json.loads(next(ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")))
    job = result["job"]
    assert result["seen"], result  # squeue showed it (queued or running), then not at all
    gone = run(["squeue", "--noheader", "--states=all", f"--jobs={job}"], check=False)
    assert job not in gone.stdout  # forgotten: only accounting knows the job now
    assert result["listed"] == []
    assert len(result["failures"]) == 1, (result, proc.stderr[-3000:])
    [(node_type, why)] = result["failures"]
    assert node_type == "cpu"
    assert re.match(rf"job {job} ended FAILED \(exit code 3:0\) on n[123] after \d+ s; "
                    rf"last lines of .*-{job}\.log: ", why), why  # fmt: skip
    assert "module nosuch: not found" in why, why
