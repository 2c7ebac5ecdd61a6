"""Issue #11, part 3: preemption, requeue and node failure, each produced for real.

The site's `scavenger` partition (PriorityTier 0, PreemptMode=REQUEUE) shares its nodes with
`debug`: a debug job preempts a scavenger job on its node. Two worker types run there, one node
each (2 CPUs): `cpu` as the provider submits it (`--no-requeue`: SLURM cancels it instead of
requeueing it) and `rq` with the user's `--requeue` (SLURM keeps its id and queues it again).

- preemption of `cpu`: the job ends PREEMPTED; it is lost, replaced, not the type's fault. On a
  site set up as current ones are (campus24, 24.11: `PreemptParameters=send_user_signal` and a
  `GraceTime` of 30 s on scavenger) the job hears its own `--signal` (B:USR1) at preemption,
  drains its Ray node (test_preempt_drain.py) and leaves within the grace, before SLURM's kill
  (SLURM records it PREEMPTED, or CANCELLED when Ray, seeing its node gone, had it cancelled
  during the grace);
- `scontrol requeue` of `rq`: the job is pending again under its id; the provider cancels the
  copy (never re-adopts it) and a new job replaces it;
- slurmd killed under the new `cpu` job: after SlurmdTimeout (30 s here) the node is DOWN and
  the job NODE_FAIL, but its Ray processes live on (nothing kills them without slurmd); the
  head's autoscaler stops that Ray node, and a replacement runs on another node. Ray counts one
  `cpu` node, never two; slurmd comes back and the node returns to service.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import BOB, Cluster, run, scontrol, wait_for
from support.accounts import SITE_STATE
from support.jobs import job_state, raylet_pid

PIDS = SITE_STATE / "run"
REPO = Path(__file__).resolve().parents[2]


def running(cluster: Cluster, node_type: str) -> list:
    return [j for j in cluster.jobs("worker")
            if j.name.endswith(f".{node_type}") and j.slurm_state == "RUNNING"]  # fmt: skip


def one_running(cluster: Cluster, node_type: str, other_than: set[str]):
    jobs = [j for j in running(cluster, node_type) if j.job_id not in other_than]
    return jobs[0] if jobs else None


def ever(cluster: Cluster, job_id: str) -> str:
    """The SLURM state of a job of the user, finished ones included (MinJobAge 300 s)."""
    return next((j.slurm_state for j in cluster.user.jobs() if j.job_id == job_id), "")


def ray_has(cluster: Cluster, count: int, node_type: str) -> bool:
    active = cluster.exec("ray status").stdout.split("Pending:")[0]
    return f" {count} {node_type}\n" in active


def raylet_alive(job_id: str) -> bool:
    return raylet_pid(job_id) is not None


@pytest.fixture
def revive_slurmd():
    """Whatever happens, bob's job is gone and the site's slurmds run again after the test (and
    their nodes serve)."""
    yield
    run(["scancel", f"--user={BOB.name}"], timeout=30)
    run([str(REPO / "scripts" / "localsite"), "up"], timeout=180)
    for node in ("n1", "n2", "n3"):
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                       capture_output=True, check=False)  # fmt: skip


def test_preempted_requeued_and_node_failed_workers_are_lost_and_replaced(
    make_cluster, revive_slurmd
):
    def two_scavenger_types(cfg):
        types = cfg["available_node_types"]
        cpu = types["cpu"]
        cpu["node_config"]["partition"] = "scavenger"
        cpu["min_workers"] = cpu["max_workers"] = 1
        types["rq"] = {**cpu, "node_config": {**cpu["node_config"],
                                               "sbatch_options": ["--requeue"]}}  # fmt: skip
        cfg["max_workers"] = 2

    cluster = make_cluster("f-preempt", change=two_scavenger_types)
    cluster.up()
    cpu = wait_for(lambda: one_running(cluster, "cpu", set()), 180, "the cpu worker")
    rq = wait_for(lambda: one_running(cluster, "rq", set()), 180, "the rq worker")
    wait_for(lambda: ray_has(cluster, 1, "cpu") and ray_has(cluster, 1, "rq"), 120, "both in Ray")

    # --- preemption: bob's debug job takes the cpu worker's node ------------------------------
    urgent = BOB.run(["sbatch", "--parsable", "-p", "debug", f"--nodelist={cpu.node}", "-c", "2",
                      "--mem=1000M", "--wrap", "sleep 600"]).stdout.strip()  # fmt: skip
    # With a grace time (campus24) the preempted job hears its --signal and its Ray leaves by
    # itself; Ray, seeing its node gone, may ask to cancel the job while SLURM's grace runs,
    # and SLURM then records the job CANCELLED rather than PREEMPTED (seen in CI under load).
    graced = "send_user_signal" in run(["scontrol", "show", "config"]).stdout
    ends = ("PREEMPTED", "CANCELLED") if graced else ("PREEMPTED",)
    wait_for(lambda: ever(cluster, cpu.job_id).startswith(ends), 90, "the preemption")
    wait_for(lambda: job_state(urgent) == "RUNNING", 60, "bob's job on the node it preempted")
    if graced:
        log = cluster.state_dir / "logs" / f"ray.f-preempt.worker.cpu-{cpu.job_id}.log"
        text = log.read_text()
        assert "ray-slurm: SIGUSR1 at" in text and "SLURM preempted job" in text, text[-3000:]
        assert "did not stop within" not in text, text[-3000:]
    cpu2 = wait_for(lambda: one_running(cluster, "cpu", {cpu.job_id}), 180, "a new cpu worker")
    assert cpu2.node != cpu.node
    wait_for(lambda: ray_has(cluster, 1, "cpu"), 120, "Ray with the new cpu node only")
    said = (f"job {cpu.job_id} ended PREEMPTED", f"terminating slurm node(s): {cpu.job_id}")
    wait_for(lambda: any(s in cluster.autoscaler_log() for s in said[: len(ends)]), 60,
             "the autoscaler to say how the job ended")  # fmt: skip
    assert "node type cpu failed" not in cluster.status()  # not the type's fault: no back-off
    run(["scancel", urgent], timeout=30)  # (and the fixture cancels it if the test fails)

    # --- scontrol requeue of the rq worker: its copy is cancelled, a new job replaces it ------
    scontrol("requeue", rq.job_id)
    wait_for(lambda: ever(cluster, rq.job_id).startswith("CANCELLED"), 90,
             "the requeued copy to be cancelled")  # fmt: skip
    rq2 = wait_for(lambda: one_running(cluster, "rq", {rq.job_id}), 180, "a new rq worker")
    # Said by the provider when it lists the job pending again; Ray, seeing the raylet die, may
    # have asked to cancel it first, and the cancel may beat the requeue: both end the copy.
    said = (f"job {rq.job_id} (node type rq) was requeued by SLURM",
            f"terminating slurm node(s): {rq.job_id}")  # fmt: skip
    wait_for(lambda: any(s in cluster.autoscaler_log() for s in said), 60,
             "the autoscaler to end the requeued copy")  # fmt: skip
    wait_for(lambda: ray_has(cluster, 1, "rq"), 120, "Ray with the new rq node only")

    # --- slurmd killed under the cpu worker: NODE_FAIL, its Ray node stopped, replaced --------
    wait_for(lambda: raylet_alive(cpu2.job_id), 60, f"Ray of job {cpu2.job_id}")
    slurmd = int((PIDS / f"slurmd-{cpu2.node}.pid").read_text())
    os.kill(slurmd, signal.SIGKILL)
    wait_for(lambda: ever(cluster, cpu2.job_id).startswith("NODE_FAIL"), 120,
             f"SLURM to mark job {cpu2.job_id} NODE_FAIL")  # fmt: skip
    wait_for(lambda: not raylet_alive(cpu2.job_id), 90,
             "the head to stop the Ray node the dead slurmd left running")  # fmt: skip
    wait_for(lambda: f"of lost job {cpu2.job_id}" in cluster.autoscaler_log(), 60,
             "the autoscaler to say it stopped the Ray node")  # fmt: skip
    cpu3 = wait_for(lambda: one_running(cluster, "cpu", {cpu.job_id, cpu2.job_id}), 180,
                    "a cpu worker on a live node")  # fmt: skip
    assert cpu3.node not in (cpu2.node,)
    wait_for(lambda: ray_has(cluster, 1, "cpu") and ray_has(cluster, 1, "rq"), 120,
             "Ray with one node of each type")  # fmt: skip
    assert rq2.job_id in {j.job_id for j in running(cluster, "rq")}

    cluster.down()
    assert cluster.jobs() == []
