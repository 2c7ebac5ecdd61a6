"""Ray programs the harness runs on a cluster; each prints one line ``RESULT <json>``."""

from __future__ import annotations

import json
from typing import Any

WHERE = """
import json, socket, time, ray
ray.init()
@ray.remote(num_cpus={cpus})
def where(seconds):
    time.sleep(seconds)
    return socket.gethostname(), ray.util.get_node_ip_address()
print("RESULT " + json.dumps(ray.get([where.remote({seconds}) for _ in range({tasks})])))
"""


def where_tasks(tasks: int, seconds: float, cpus: int = 2) -> str:
    """A driver that runs ``tasks`` tasks of ``cpus`` CPUs and prints where each ran."""
    return WHERE.format(tasks=tasks, seconds=seconds, cpus=cpus)


def result(stdout: str) -> Any:
    """The JSON a driver printed after ``RESULT ``."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def parse_result(stdout: str) -> list[tuple[str, str]]:
    """``where_tasks``' answer: (hostname, node IP) of each task."""
    return [(str(host), str(ip)) for host, ip in result(stdout)]


# Roll-over's workload (tests/e2e/test_rollover.py, bench k): one-CPU workers whose jobs have a
# 3-minute limit (SLURM's limits are whole minutes) and their walltime warning 30 s before it
# (SLURM sends it up to 30 s earlier still), a stream of three 80 s tasks (on three generations
# of workers with roll-over), and a lead of 120 s: longer than a task plus a worker's start,
# while the warning leaves a task at most 40 s.
ROLLOVER_TASK_S = 80
ROLLOVER_TASKS = 3
ROLLOVER_LEAD_S = 120
ROLLOVER_NODE_CONFIG = {"cpus": 1, "time": "00:03:00", "walltime_warning_s": 30}
ROLLOVER_WAIT_S = 2 * ROLLOVER_TASKS * ROLLOVER_TASK_S + 240  # a stream's driver ends by then

# A stream of one-CPU tasks, one after the other: demand held across generations of workers.
# Each attempt runs once (``max_retries=0``): the driver submits a failed task again itself and
# keeps Ray's error.
STREAM = """
import json, os, re, time
import ray

ray.init()

@ray.remote(num_cpus=1, max_retries=0)
def work(i):
    start = time.time()
    time.sleep({task_s})
    return {{"i": i, "job": os.environ.get("SLURM_JOB_ID"), "start": start, "end": time.time()}}

done, failed = [], []
i = 0
# {tasks} tasks, or fewer once a failed one has run again (what roll-over off loses is seen)
while i < {tasks} and not (failed and done and done[-1]["i"] == failed[-1]["i"]):
    try:
        done.append(ray.get(work.remote(i)))
        i += 1
    except Exception as exc:  # the attempt died with its node: submit it again
        error = f"{{type(exc).__name__}}: {{exc}}"
        # Ray's error points to the node's death information: its reason, as the GCS keeps it
        dead = re.search(r"node ID: ([0-9a-f]+)", error)
        death = [n.get("DeathReasonMessage", "") for n in ray.nodes()
                 if dead and n["NodeID"] == dead.group(1)]
        failed.append({{"i": i, "at": time.time(), "error": error, "death": "".join(death)}})
        if len(failed) > 4:
            break
print("RESULT " + json.dumps({{"done": done, "failed": failed}}))
"""


def task_stream(task_s: float, tasks: int) -> str:
    """A driver of a task stream; its result: ``{"done": [...], "failed": [...]}``."""
    return STREAM.format(task_s=task_s, tasks=tasks)


def stream_figures(run: dict[str, Any]) -> dict[str, Any]:
    """What a task stream lost: the gaps between one task's end and the next one's (successful)
    start, where the demand was not served by useful work — waiting for a node, and the run of
    attempts that failed (``wasted_cpu_s``) — and the tasks that failed and ran again."""
    done, failed = run["done"], run["failed"]
    gaps = [b["start"] - a["end"] for a, b in zip(done, done[1:], strict=False)]
    ends = {t["i"]: t["end"] for t in done}
    wasted = sum(f["at"] - ends[f["i"] - 1] for f in failed if f["i"] - 1 in ends)
    return {"tasks": len(done), "failed": len(failed),
            "largest_gap_s": round(max(gaps, default=0), 1),
            "unserved_cpu_s": round(sum(gap for gap in gaps if gap > 0), 1),
            "wasted_cpu_s": round(wasted, 1), "workers": len({t["job"] for t in done})}  # fmt: skip
