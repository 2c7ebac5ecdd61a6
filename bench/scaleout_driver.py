"""The scale-out benchmark's driver: on the login node with the cluster's driver environment.

Same parameters and plain job script as ``scaleup_driver`` (whose helpers it uses). Per round:
  floor     ``count`` bare jobs submitted at once, by ``count`` sbatch calls, then as one job
            array: time until all their CPUs are in the cluster
  ours      ``count`` one-CPU tasks on a cluster with no workers: time until the cluster has
            their CPUs, until all have started, and from the last one's end until the idle
            workers are gone; slurmctld's RPCs meanwhile (sdiag, every user: this cluster's
            provider, its jobs, nothing else polls SLURM in this phase)
Then slurmctld's RPCs over a minute of the idle cluster. Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray
import scaleup_driver as base
from support.jobs import job_state
from support.procs import run, wait_for

P = base.P
COUNT = int(P["count"])
REST_S = 60.0
SETTLE_S = 20.0


def sdiag() -> dict[str, int]:
    """slurmctld's RPC counts by message type so far (``sdiag``; only root may reset them)."""
    out = run(["sdiag"], timeout=60).stdout
    section = out.split("by message type", 1)[-1].split("by user", 1)[0]
    return {name: int(count) for name, count in re.findall(r"(\w+)\s+\(\s*\d+\) count:(\d+)",
                                                           section)}  # fmt: skip


def rpcs_since(before: dict[str, int]) -> dict[str, int]:
    """The RPCs slurmctld got, by type, since ``before`` (an ``sdiag()``)."""
    now = sdiag()
    return {name: n - before.get(name, 0) for name, n in now.items() if n > before.get(name, 0)}


def all_cpus(timeout: float = max(180.0, 15.0 * COUNT)) -> float:  # 32 joins on 2 cores: minutes
    deadline = time.monotonic() + timeout
    while base.cpus() < COUNT * P["cpus"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{COUNT} workers did not join within {timeout} s")
        time.sleep(base.POLL_S)
    return time.time()


def floor(script: Path, array: bool) -> dict[str, float]:
    """``COUNT`` bare jobs at once: by as many sbatch calls, or as one array."""
    t0 = time.time()
    if array:
        ids = [base.slurm.sbatch(str(script), [f"--array=0-{COUNT - 1}"])]
    else:
        ids = [base.slurm.sbatch(str(script)) for _ in range(COUNT)]
    submitted = time.time()
    try:
        t_all = all_cpus()
    finally:
        base.slurm.scancel(ids)

    def left() -> bool:
        return base.cpus() == 0 and all(job_state(i) not in ("RUNNING", "COMPLETING") for i in ids)

    wait_for(left, 120, "the bare workers to leave", 0.2)
    return {"submit_s": submitted - t0, "all_cpus_s": t_all - t0}


@ray.remote(num_cpus=1)
def one() -> tuple[float, str]:
    started = time.time()
    time.sleep(1)
    return started, socket.gethostname()


def ours() -> dict[str, Any]:
    before = sdiag()
    t0 = time.time()
    seen: dict[str, float] = {}

    def watch() -> None:  # the cluster's CPUs, from Ray's GCS (not SLURM)
        while "all" not in seen and time.time() - t0 < 300:
            if base.cpus() >= COUNT * P["cpus"]:
                seen["all"] = time.time()
            time.sleep(base.POLL_S)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results = ray.get([one.remote() for _ in range(COUNT)], timeout=300)
    done = time.time()
    watcher.join(5)
    wait_for(lambda: base.cpus() == 0, 240, "the idle workers to be cancelled", 0.5)
    gone = time.time()
    rpcs = rpcs_since(before)
    return {
        "all_cpus_s": seen.get("all", float("nan")) - t0,
        "all_started_s": max(r[0] for r in results) - t0,
        "hosts": sorted({r[1] for r in results}),
        "idle_gone_s": gone - done,
        "window_s": gone - t0,
        "rpcs": rpcs,
    }


def main() -> None:
    ray.init(logging_level="ERROR")
    wait_for(
        lambda: base.cpus() == 0 and not base.worker_jobs(), 240, "a cluster without workers", 1
    )
    script = Path(P["workdir"]) / "floor.sh"
    base.floor_script(script)
    rounds = []
    for i in range(P["runs"]):
        bare = floor(script, array=False)
        array = floor(script, array=True)
        rounds.append({"floor": bare, "floor_array": array, "ours": ours()})
        print(f"round {i + 1}: {json.dumps(rounds[-1])[:300]}", file=sys.stderr, flush=True)
    time.sleep(SETTLE_S)  # the last jobs' ends and node messages are not the cluster at rest
    before = sdiag()
    time.sleep(REST_S)
    rest = {"window_s": REST_S, "rpcs": rpcs_since(before)}
    print("RESULT " + json.dumps({"rounds": rounds, "rest": rest}))


if __name__ == "__main__":
    main()
