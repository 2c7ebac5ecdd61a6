"""``ray-slurm drain`` (in a worker's job): its end is near, so its Ray node is drained until then.

The job script runs it when it hears USR1: SLURM's ``--signal`` before the time limit (or at
preemption, where the site sets ``PreemptParameters=send_user_signal``), or the head's
autoscaler once the worker's replacement has joined (``rollover``). It asks SLURM once when the
job really ends (``EndTime``: the time limit, or preemption time + GraceTime) and whether it was
preempted, asks Ray's GCS to drain this node until just before then, records the drain in the
cluster's state (``ray-slurm status`` shows it) and prints the deadline (epoch seconds) for the
script, which stops Ray when its node has left or the deadline has come.
"""

from __future__ import annotations

import logging
import time

from ray_slurm.backends.slurm.client import Slurm, SlurmError
from ray_slurm.backends.slurm.ended import parse_scontrol_job
from ray_slurm.cluster import raynodes, rollover
from ray_slurm.host.state import ClusterDir

logger = logging.getLogger(__name__)

# scontrol's times (``EndTime=2026-12-08T12:30:00``), in the local time of whoever asks.
SLURM_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
NOT_SET = ("", "None", "Unknown", "N/A")


def job_end(slurm: Slurm, job_id: str, fallback_s: float) -> tuple[float, str]:
    """When the job ends (epoch seconds) and why: preemption or its time limit. If SLURM does
    not answer, its time limit is ``fallback_s`` from now (what the walltime warning means)."""
    try:
        out = slurm.run(["scontrol", "show", "job", "-o", job_id], check=False).stdout
    except SlurmError as exc:  # slurmctld away or too slow: the fallback below
        out = str(exc)
    fields = parse_scontrol_job(out)
    reason = rollover.REASON_TIME_LIMIT
    if fields.get("PreemptTime", "") not in NOT_SET:
        reason = rollover.REASON_PREEMPTION
    try:
        return time.mktime(time.strptime(fields["EndTime"], SLURM_TIME_FORMAT)), reason
    except (KeyError, ValueError):
        logger.warning("SLURM did not say when job %s ends (%s): assuming in %.0f s", job_id,
                       out.strip()[:200] or "no answer", fallback_s)  # fmt: skip
        return time.time() + fallback_s, reason


def drain(cluster: ClusterDir, gcs_address: str, job_id: str, fallback_s: float,
          slurm: Slurm | None = None) -> float:  # fmt: skip
    """Drain this job's Ray node until before its end; returns the deadline (epoch seconds).

    If the GCS cannot drain it, the deadline stands all the same: the script stops Ray then,
    as it would have without a drain, and the message says so."""
    end, reason = job_end(slurm or Slurm(), job_id, fallback_s)
    now = time.time()
    deadline = max(now, rollover.drain_deadline(end))
    message = rollover.drain_message(reason, job_id, end)
    try:
        ray_node = raynodes.drain(gcs_address, job_id, message, deadline)
    except Exception as exc:  # the GCS is busy or gone: stop at the deadline without it
        logger.warning("could not drain this node through Ray (%s): %s; Ray is stopped at %s",
                       exc, message, rollover.clock(deadline))  # fmt: skip
    else:
        logger.info("draining Ray node %s (%s): no new work here; running tasks have until %s",
                    ray_node[:12], message, rollover.clock(deadline))  # fmt: skip
    with cluster.update() as state:
        entry = state["nodes"].get(job_id)
        if entry is not None:
            entry["drain"] = {"reason": reason, "since": now, "deadline": deadline, "end": end}
    return deadline
