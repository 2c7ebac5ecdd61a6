"""c. Teardown: `ray down` of a cluster with many nodes; wall time and scancel calls.

The site has 3 nodes of 2 CPUs, so "many nodes" are 6 running 1-CPU workers (asked for with
``request_resources``) plus held jobs named as the cluster's workers, which the provider adopts
from squeue like any job of the cluster. A ``scancel`` first on ``ray down``'s PATH logs each
call and execs the real one.
"""

from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import driver, log, median
from support.cluster import Cluster
from support.procs import WaitTimeout, run, wait_for

REQUEST = """
import json, time, ray
from ray.autoscaler.sdk import request_resources
ray.init(logging_level="ERROR")
request_resources(bundles=[{{"CPU": 1}}] * {n})
deadline = time.monotonic() + 240
while ray.cluster_resources().get("CPU", 0) < {n} and time.monotonic() < deadline:
    time.sleep(0.5)
print("RESULT " + json.dumps({{"cpus": ray.cluster_resources().get("CPU", 0)}}))
"""


def submit_held(job_name: str, count: int, workdir: Path, user: str = "") -> list[str]:
    """``count`` held jobs named ``job_name`` (one sbatch each, 8 at a time), the harness's or
    ``user``'s (another user's jobs write no output)."""
    args = [
        *(["runuser", "-u", user, "--"] if user else []),
        "sbatch",
        "--parsable",
        "--hold",
        f"--job-name={job_name}",
        "--cpus-per-task=1",
        "--mem=100M",
        "--output=/dev/null" if user else f"--output={workdir}/held-%j.log",
        "--wrap",
        "true",
    ]

    def one(_: int) -> str:
        return run(args, timeout=60).stdout.strip().split(";")[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def counting_scancel(workdir: Path) -> tuple[Path, Path]:
    """A bin dir whose scancel logs "<time> <ids...>" per call, then runs the real scancel."""
    real = shutil.which("scancel")
    if real is None:
        raise RuntimeError("scancel not found on PATH")
    bin_dir = workdir / "count-bin"
    bin_dir.mkdir(exist_ok=True)
    calls = workdir / "scancel-calls.log"
    wrapper = bin_dir / "scancel"
    wrapper.write_text(
        f'#!/bin/bash\nprintf "%s %s\\n" "$(date +%s.%N)" "$*" >> {calls}\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    return bin_dir, calls


def one_run(cluster: Cluster, workdir: Path, workers: int, held: int) -> dict[str, Any]:
    if not cluster.is_up:
        cluster.up("--no-config-cache")
    got = driver(cluster, REQUEST.format(n=workers))["cpus"]
    if got < workers:
        raise RuntimeError(f"only {got} of {workers} worker CPUs joined")
    submit_held(f"ray.{cluster.name}.worker.cpu", held, workdir, cluster.user.name)
    nodes = len(cluster.jobs("worker"))
    bin_dir, calls_log = counting_scancel(workdir)
    calls_log.unlink(missing_ok=True)
    env = cluster.env()
    for key in ("RAY_ADDRESS",):
        env.pop(key, None)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    wall = cluster.down(env=env)
    calls = calls_log.read_text().splitlines() if calls_log.exists() else []
    ids_per_call = [len(line.split()) - 1 for line in calls]
    try:
        wait_for(lambda: not cluster.jobs(), 30, "no job of the cluster left", 1)
        left: list[str] = []
    except WaitTimeout:
        left = [j.job_id for j in cluster.jobs()]
    log(f"teardown: {nodes} worker jobs + head in {wall:.1f} s, scancel calls {ids_per_call}")
    return {
        "worker_jobs": nodes,
        "wall_s": wall,
        "scancel_calls": len(calls),
        "ids_per_call": ids_per_call,
        "left": left,
    }


def measure(clusters: list[Cluster], workdir: Path, workers: int, held: int) -> dict[str, Any]:
    runs = []
    for cluster in clusters:
        try:
            runs.append(one_run(cluster, workdir, workers, held))
        finally:
            cluster.cleanup()
        time.sleep(1)
    calls = median([r["scancel_calls"] for r in runs])
    why = ""
    if calls > 1:
        why = (
            "ray down polls nodes_for_teardown every 5 s and terminates what is still "
            "listed: jobs still COMPLETING after the first scancel got another call"
        )
    return {
        "runs": len(runs),
        "wall_s": median([r["wall_s"] for r in runs]),
        "scancel_calls": calls,
        "worker_jobs": median([r["worker_jobs"] for r in runs]),
        "ok": calls <= 1 and not any(r["left"] for r in runs),
        "why": why,
        "details": runs,
    }


if __name__ == "__main__":
    sys.exit("run bench/run.py")
