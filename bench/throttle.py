"""i. Ten clusters of one user under slurmctld's RPC rate limiter (campus24: 24.11, rl_enable).

SLURM's default budget is a bucket of 30 RPCs refilled at 2 a second per user: 120 a minute for
everything the user runs. Ten login-mode clusters of the bench user's, one 1-CPU worker each at
most, are started one after the other and left alone (``REST_S``): what the user's RPCs cost
slurmctld then is the product's listing alone. Then every cluster gets one 1-CPU task at once
(the site has 6 CPUs: four wait for a free one) and the clock runs until every task has run and
every idle worker is gone; then all ten are taken down at once.

Counted: the user's RPCs per minute per cluster (sdiag "by user"), at rest and while scaling;
the provider's throttled commands (its log says each: ``RPC rate limiter made squeue wait``);
what must never happen (a command given up or killed, a type backed off, a worker submitted
twice by one cluster, a job left after ``ray down``). The floor: the same ten 1-CPU jobs
submitted bare at once by the same user (10 sbatch calls), time until all have run.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from common import BENCH_USER, bench_cluster, log
from support.cluster import Cluster
from support.procs import run

from ray_slurm.backends.nodes import JobState

CLUSTERS = 10
REST_S = 60.0
SETTLE_S = 20.0
TASK_S = 5
BUDGET_PER_MIN = 120  # SLURM's defaults: rl_refill_rate 2 per rl_refill_period 1 s
_THROTTLED = re.compile(r"RPC rate limiter made (\w+) wait (\d+) time")
NEVER = {
    "gave up": "a command given up for throttling",
    "did not answer within": "a command killed at its timeout",
    "no new job of this type": "a node type backed off",
}
TASK = f"""
import json, ray, time
ray.init()
@ray.remote(num_cpus=1)
def one():
    time.sleep({TASK_S})
    return time.time()
print("RESULT " + json.dumps(ray.get(one.remote(), timeout=900)))
"""


def user_rpcs() -> int:
    """The bench user's RPCs so far (sdiag by user; root's sdiag itself is not theirs)."""
    out = run(["sdiag"], timeout=60).stdout.split("by user", 1)[-1]
    found = re.search(rf"^\s*{re.escape(BENCH_USER.name)}\s+\(\s*\d+\) count:(\d+)", out, re.M)
    return int(found.group(1)) if found else 0


def per_cluster_per_min(count: int, seconds: float) -> float:
    return count * 60 / seconds / CLUSTERS


def all_at_once(fns: list[Any]) -> list[Any]:
    """Run each function in its own thread, together; their results (or exceptions) in order."""
    out: list[Any] = [None] * len(fns)

    def call(i: int) -> None:
        try:
            out[i] = fns[i]()
        except Exception as exc:  # reported in the results, not fatal to the others
            out[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def floor(workdir: Path) -> float:
    """Ten bare 1-CPU jobs of the user's, submitted at once: seconds until all have ended."""
    text = f"#!/bin/bash\n#SBATCH -c 1 --mem=1000M -o /dev/null\nsleep {TASK_S}\n"
    script = BENCH_USER.write(workdir / "throttle-floor.sh", text, mode=0o755)
    t0 = time.monotonic()
    ids = all_at_once([
        lambda: BENCH_USER.run(["sbatch", "--parsable", str(script)], timeout=600).stdout.strip()
        for _ in range(CLUSTERS)
    ])  # fmt: skip
    ids = [i for i in ids if isinstance(i, str)]
    while set(ids) & {j.job_id for j in BENCH_USER.jobs() if j.state is not JobState.GONE}:
        time.sleep(0.5)
    return time.monotonic() - t0


def worker_jobs_submitted(cluster: Cluster, since: str) -> int:
    """Every worker job the cluster ever submitted (accounting keeps the ended ones)."""
    out = run(["sacct", "-X", "-n", "-P", "-u", BENCH_USER.name, "-S", since, "-o", "JobID",
               f"--name=ray.{cluster.name}.worker.cpu"], timeout=120).stdout  # fmt: skip
    return len([ln for ln in out.splitlines() if ln.strip()])


def measure(workdir: Path) -> dict[str, Any]:
    stamp = os.getpid() % 1000
    clusters = [bench_cluster(f"rl{stamp}x{i}", workdir, 1, 0.1) for i in range(CLUSTERS)]
    since = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        ups = [c.up("--no-config-cache") for c in clusters]
        log(f"throttle: {CLUSTERS} clusters up ({sum(ups):.0f} s); at rest for {REST_S:.0f} s")
        time.sleep(SETTLE_S)
        before = user_rpcs()
        time.sleep(REST_S)
        rest = user_rpcs() - before

        envs = [c.env() for c in clusters]
        before, t0 = user_rpcs(), time.monotonic()
        ran = all_at_once([lambda c=c, e=e: c.driver(TASK, timeout=900, env=e)
                           for c, e in zip(clusters, envs, strict=True)])  # fmt: skip
        tasks_s = time.monotonic() - t0
        failed = [
            f"{c.name}: {r}" for c, r in zip(clusters, ran, strict=True) if isinstance(r, Exception)
        ]
        while any(c.jobs("worker") for c in clusters) and time.monotonic() - t0 < 900:
            time.sleep(1)
        scaling_s = time.monotonic() - t0
        scaling = user_rpcs() - before
        logs = [c.autoscaler_log() for c in clusters]

        t0 = time.monotonic()
        downs = all_at_once([c.down for c in clusters])
        down_s = time.monotonic() - t0
        failed += [f"ray down {c.name}: {r}" for c, r in zip(clusters, downs, strict=True)
                   if isinstance(r, Exception)]  # fmt: skip
        left = [j.job_id for c in clusters for j in c.jobs()]
    finally:
        for c in clusters:
            c.cleanup()
    throttled = [(cmd, int(k)) for text in logs for cmd, k in _THROTTLED.findall(text)]
    never = {what: sum(text.count(needle) for text in logs) for needle, what in NEVER.items()}
    never_lines = [ln for text in logs for ln in text.splitlines()
                   if any(needle in ln for needle in NEVER)][:5]  # fmt: skip
    submitted = [worker_jobs_submitted(c, since) for c in clusters]
    floor_s = floor(workdir)
    problems = [f"{n} x {what}" for what, n in never.items() if n]
    problems += failed
    problems += [f"{sum(s - 1 for s in submitted if s > 1)} worker(s) submitted twice"] if any(
        s > 1 for s in submitted) else []  # fmt: skip
    problems += [f"jobs left after ray down: {left}"] if left else []
    result = {
        "clusters": CLUSTERS,
        "budget_rpcs_per_min": BUDGET_PER_MIN,
        "rest_rpcs_per_min_per_cluster": per_cluster_per_min(rest, REST_S),
        "scaling_rpcs_per_min_per_cluster": per_cluster_per_min(scaling, scaling_s),
        "tasks_done_s": tasks_s,
        "scaling_window_s": scaling_s,
        "floor_bare_jobs_s": floor_s,
        "ray_down_all_s": down_s,
        "ray_up_s": ups,
        "throttled_commands": len(throttled),
        "throttled_refusals": sum(k for _, k in throttled),
        "throttled_by_command": {
            cmd: sum(1 for c, _ in throttled if c == cmd)
            for cmd in sorted({c for c, _ in throttled})
        },  # fmt: skip
        "never": never,
        "never_lines": never_lines,
        "worker_jobs_submitted": submitted,
        "problems": problems,
    }
    log(f"throttle: {result}")
    if problems:
        result.update(available=False, why="; ".join(problems))
    return result
