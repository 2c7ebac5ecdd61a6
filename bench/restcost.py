"""h. What acting on new demand at once costs the login node: the head's CPU at rest.

Two login-mode clusters of the bench user's, one with the provider's defaults (the autoscaler
asks the GCS for new demand every ``demand_poll_ms`` = 100 ms and the GCS pulls each node's
queued tasks as often) and one with ``demand_poll_ms: 0`` (Ray's behaviour: new demand waits
for the autoscaler's 1 s loop, the GCS pulls every second). Each holds one idle worker
(``min_workers: 1``: the GCS pulls from its raylet too) and is left alone for ``WINDOW_S``;
the CPU time of each of the head's processes over that window (utime + stime in /proc) is the
cost, in ms of CPU per second of wall time (10 ms/s = 1 % of a core).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from common import bench_cluster, component, log, process_tree

from ray_slurm.backends.nodes import JobState
from ray_slurm.config.provider import DEFAULT_DEMAND_POLL_MS

SETTLE_S = 15  # after the worker joined: ray up's and the join's own work is over
WINDOW_S = 30
POLLS = {"default": None, "off": 0}  # demand_poll_ms: the provider's default, and none


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def cpu_by_component(pids: list[int], seconds: float) -> dict[str, float]:
    """ms of CPU per second per Ray component of ``pids`` over ``seconds``."""
    names = {pid: component(pid) for pid in pids}
    before = {pid: cpu_ticks(pid) for pid in pids}
    time.sleep(seconds)
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for pid in pids:
        used = max(cpu_ticks(pid) - before[pid], 0) * tick_ms / seconds
        found[names[pid]] = round(found.get(names[pid], 0.0) + used, 2)
    return dict(sorted(found.items(), key=lambda item: -item[1]))


def one(workdir: Path, name: str, poll_ms: int | None) -> dict[str, Any]:
    provider = {} if poll_ms is None else {"demand_poll_ms": poll_ms}
    cluster = bench_cluster(name, workdir, 1, 5, min_workers=1, provider=provider)
    try:
        cluster.up("--no-config-cache")
        deadline = time.monotonic() + 180
        while not any(j.state is JobState.RUNNING for j in cluster.jobs("worker")):
            if time.monotonic() > deadline:
                raise TimeoutError("the min worker did not start within 180 s")
            time.sleep(1)
        time.sleep(SETTLE_S)
        by = cpu_by_component(process_tree(cluster.login_head_pid()), WINDOW_S)
    finally:
        cluster.cleanup()
    return {"demand_poll_ms": DEFAULT_DEMAND_POLL_MS if poll_ms is None else poll_ms,
            "head_cpu_ms_per_s": round(sum(by.values()), 2), "by_component": by}  # fmt: skip


def measure(workdir: Path) -> dict[str, Any]:
    stamp = os.getpid() % 10000
    results = {label: one(workdir, f"rest{label}{stamp}", poll) for label, poll in POLLS.items()}
    extra = results["default"]["head_cpu_ms_per_s"] - results["off"]["head_cpu_ms_per_s"]
    log(f"head CPU at rest: {results['default']['head_cpu_ms_per_s']} ms/s with the demand "
        f"poll, {results['off']['head_cpu_ms_per_s']} ms/s without")  # fmt: skip
    return {**results, "extra_ms_per_s": round(extra, 2), "window_s": WINDOW_S}
