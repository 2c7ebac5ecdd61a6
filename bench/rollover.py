"""k. Capacity around a worker's time limit, with roll-over on and off.

Two login-mode clusters of the bench user's run the same task stream side by side (three 80 s
one-CPU tasks one after another: demand held across generations of workers) on one-CPU
workers whose jobs have a 3-minute limit and a 30 s walltime warning: the workload of
``tests/e2e/test_rollover.py`` (``support.drivers``). One rolls its workers over
(``rollover_lead_s: 120``: a replacement queued before a busy worker's limit, the old one
drained once it has joined); the other has roll-over off (the warning drains the worker until
20 s before its limit; what runs then is ended and run again, and the stream ends once it
has). The figures: the CPU-seconds of demand unserved (gaps between tasks, and the run of
attempts that were ended), the tasks that failed, the largest gap. The floor is 0 (the demand
always served); roll-over off is the peer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common import REPO, bench_cluster, log

sys.path.insert(0, str(REPO / "tests"))
from support.drivers import (  # noqa: E402
    ROLLOVER_LEAD_S,
    ROLLOVER_NODE_CONFIG,
    ROLLOVER_TASK_S,
    ROLLOVER_TASKS,
    ROLLOVER_WAIT_S,
    result,
    stream_figures,
    task_stream,
)

LEADS = {"on": ROLLOVER_LEAD_S, "off": 0}


def measure(workdir: Path) -> dict[str, Any]:
    clusters = {
        name: bench_cluster(f"roll{name}", workdir, 2, 3,
                            node_config={**ROLLOVER_NODE_CONFIG, "rollover_lead_s": lead})
        for name, lead in LEADS.items()
    }  # fmt: skip
    try:
        for cluster in clusters.values():
            cluster.up("--no-config-cache")
        stream = task_stream(ROLLOVER_TASK_S, ROLLOVER_TASKS)
        procs = {name: c.user.popen([c.user.bin("python"), "-c", stream], env=c.env())
                 for name, c in clusters.items()}  # fmt: skip
        results = {name: result(proc.communicate(timeout=ROLLOVER_WAIT_S)[0])
                   for name, proc in procs.items()}  # fmt: skip
    finally:
        for cluster in clusters.values():
            cluster.cleanup()
    figures = {name: stream_figures(run) for name, run in results.items()}
    log(f"k roll-over: {figures}")
    return {**figures, "task_s": ROLLOVER_TASK_S, "tasks": ROLLOVER_TASKS,
            "time_limit": ROLLOVER_NODE_CONFIG["time"],
            "walltime_warning_s": ROLLOVER_NODE_CONFIG["walltime_warning_s"],
            "lead_s": LEADS["on"]}  # fmt: skip
