"""Issue #28: no work lost to SLURM's clock — drain with a deadline, the replacement ready first.

Two clusters of alice's run side by side, the same workload on each (``support.drivers``): one
stream of three 80 s tasks (each attempt run once, `max_retries=0`: the driver itself submits a
failed one again, keeps Ray's error, and stops once it has run again), on one-CPU workers whose
jobs have a 3-minute limit and their walltime warning 30 s before it (SLURM sends it up to 30 s
earlier still). A task that starts on a worker after its first one cannot finish before the
limit, nor in what the warning leaves it.

- Roll-over on (`rollover_lead_s: 120`): 120 s before a busy worker's limit the head's
  autoscaler queues a replacement job; once it has joined, the old job is told to drain: Ray
  places no new task there, the running one finishes, the raylet leaves and the job ends
  before its limit. No task fails or runs twice; the next task starts within a tick of the
  last one's end, on the replacement: three tasks on three generations of workers.
- Roll-over off (`rollover_lead_s: 0`): the warning drains the worker with the deadline of its
  job's end; the task running there is ended at the deadline (the node's death, which Ray's
  error points to, names the time limit), submitted again and run on the worker Ray asked for
  once the old one drained.
"""

from __future__ import annotations

import json

from conftest import run, wait_for
from support.drivers import (
    ROLLOVER_LEAD_S,
    ROLLOVER_NODE_CONFIG,
    ROLLOVER_TASK_S,
    ROLLOVER_TASKS,
    ROLLOVER_WAIT_S,
    stream_figures,
    task_stream,
)

GAP_S = 5.0  # "a tick": the autoscaler's loop, Ray's scheduling, the driver's next submit


def rollover_config(lead: int):
    def change(cfg):
        cfg["idle_timeout_minutes"] = 3  # a replacement waits idle while its predecessor works
        cpu = cfg["available_node_types"]["cpu"]
        cpu["resources"] = {"CPU": 1}
        cpu["max_workers"] = 2  # the old worker and its replacement, for a while
        cpu["node_config"].update(ROLLOVER_NODE_CONFIG, rollover_lead_s=lead)

    return change


def result(proc) -> dict:
    out, err = proc.communicate(timeout=ROLLOVER_WAIT_S)
    assert proc.returncode == 0, err[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def ended(job_id: str) -> str:
    """How a job ended, from the site's accounting (squeue forgets it after MinJobAge)."""
    return run(["sacct", "-j", job_id, "-X", "-n", "-o", "State"], timeout=30).stdout.strip()


def test_a_rolled_over_worker_loses_no_task_and_the_cluster_no_capacity(make_cluster):
    on = make_cluster("roll-on", change=rollover_config(ROLLOVER_LEAD_S))
    off = make_cluster("roll-off", change=rollover_config(0))
    on.up()
    off.up()
    stream = task_stream(ROLLOVER_TASK_S, ROLLOVER_TASKS)
    drivers = {c.name: c.user.popen([c.user.bin("python"), "-c", stream], env=c.env())
               for c in (on, off)}  # fmt: skip
    with_rollover, without = result(drivers["roll-on"]), result(drivers["roll-off"])

    # --- roll-over on: no failure, no retry, no gap; three generations of workers --------------
    done, figures = with_rollover["done"], stream_figures(with_rollover)
    assert with_rollover["failed"] == [], with_rollover["failed"]
    assert [t["i"] for t in done] == list(range(ROLLOVER_TASKS))
    assert figures["largest_gap_s"] < GAP_S, f"capacity dipped between tasks: {done}"
    jobs = [t["job"] for t in done]
    assert figures["workers"] == ROLLOVER_TASKS, f"tasks ran on {jobs}: one generation each"
    log = on.autoscaler_log()
    first = jobs[0]
    said = [ln for ln in log.splitlines() if f"worker {first} (cpu) ends at " in ln]
    assert any(": replacement " in ln and ", draining from " in ln for ln in said), said
    job_log = (on.state_dir / "logs" / f"ray.roll-on.worker.cpu-{first}.log").read_text()
    assert "draining Ray node" in job_log and "reaches its time limit" in job_log, job_log[-3000:]
    # Its last task done, the raylet left: the job stopped Ray itself, or Ray's autoscaler, seeing
    # the node gone, had the job cancelled first (whichever looked first, a second apart).
    after = job_log.split("draining Ray node", 1)[1]
    assert "the drained node had no work left" in after or "SIGTERM at" in after, after
    assert "the drain's deadline came" not in after, after
    # It ended before its limit: COMPLETED, or CANCELLED when Ray's autoscaler, seeing its Ray
    # node gone, had the job cancelled first (it was leaving anyway).
    wait_for(lambda: ended(first).startswith(("COMPLETED", "CANCELLED")), 120,
             f"job {first} to end before its limit, not TIMEOUT")  # fmt: skip

    # --- roll-over off: the warning's drain ends the task at the deadline; it runs again -------
    failed = without["failed"]
    assert failed, f"no task failed without roll-over: {without}"
    # Ray's NodeDiedError names the node; its death, as the GCS recorded it, names the reason
    assert any("reaches its time limit at" in f["death"] for f in failed), failed
    retried = {f["i"] for f in failed}
    assert retried & {t["i"] for t in without["done"]}, "the failed task never ran again"
    lost = stream_figures(without)
    assert lost["unserved_cpu_s"] > figures["unserved_cpu_s"] + 30, (figures, lost)
    print(f"roll-over on: {figures}; off: {lost}")
    on.down()
    off.down()
