"""The 32-node benchmark's driver (j), on the login node with the cluster's driver environment.

Same parameters as ``scaleout_driver``. The floor: ``count`` bare `ray start` jobs joining the
head, in waves of ``WAVE`` (32 at once do not start on 2 cores: each raylet must register with
the GCS within 30 s, fixed in Ray 2.60's ``node.py``, and 32 starting together took longer; 8 at
once on top of 24 joined did not always), each wave submitted by ``WAVE`` sbatch calls or as one
job array of ``WAVE``: the pace at which the cluster starts its own (``wide.UPSCALING_SPEED``).
Then ours: ``count`` one-CPU tasks, each held until all of them run, so the demand stays at
``count`` CPUs until the cluster has them and every worker runs one; then released. They mark
their arrival and wait for the release as files in the shared work dir, sleeping (a task blocked
in ``ray.get`` lends its CPU to the next task, which then runs on the same node: the cluster
would not grow). Timed:
all CPUs in the cluster, all tasks running (on how many distinct nodes), idle workers gone;
slurmctld's RPCs by type meanwhile (sdiag). Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import scaleout_driver as out
import scaleup_driver as base
from support.jobs import job_state
from support.procs import wait_for

P = base.P
COUNT = int(P["count"])
WAVE = 5


def floor(script: Path, array: bool) -> dict[str, float]:
    """``COUNT`` bare jobs in waves of ``WAVE``, each wave once the one before has joined."""
    t0 = time.time()
    ids: list[str] = []
    submit_s = 0.0
    try:
        for done in range(0, COUNT, WAVE):
            n = min(WAVE, COUNT - done)
            t = time.time()
            if array:
                ids.append(base.slurm.sbatch(str(script), [f"--array=0-{n - 1}"]))
            else:
                ids += [base.slurm.sbatch(str(script)) for _ in range(n)]
            submit_s += time.time() - t
            deadline = time.monotonic() + 300
            while base.cpus() < (done + n) * P["cpus"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{done + n} bare workers did not join within 300 s")
                time.sleep(base.POLL_S)
        t_all = time.time()
    finally:
        base.slurm.scancel(ids)

    def left() -> bool:
        return base.cpus() == 0 and all(job_state(i) not in ("RUNNING", "COMPLETING") for i in ids)

    wait_for(left, 300, "the bare workers to leave", 0.5)
    return {"submit_s": submit_s, "all_cpus_s": t_all - t0}


@ray.remote(num_cpus=1)
def held(flags: str) -> tuple[float, str]:
    """Holds its CPU until the driver releases all tasks: it marks its arrival and waits for the
    release as files in the shared work dir, sleeping. Waiting in ``ray.get`` (on an actor) would
    lend the task's CPU to the next task, which then runs on the same node."""
    started = time.time()
    Path(flags, f"arrived-{uuid.uuid4().hex}").touch()
    while not Path(flags, "release").exists():
        time.sleep(0.5)
    return started, socket.gethostname()


def ours(round_no: int) -> dict[str, Any]:
    flags = Path(P["workdir"]) / f"flags-{round_no}"
    flags.mkdir()
    before = out.sdiag()
    t0 = time.time()
    refs = [held.remote(str(flags)) for _ in range(COUNT)]
    t_cpus = out.all_cpus()
    wait_for(lambda: len(list(flags.glob("arrived-*"))) >= COUNT, 300, "every task to run", 0.5)
    t_running = time.time()
    (flags / "release").touch()
    results = ray.get(refs, timeout=300)
    done = time.time()
    wait_for(lambda: base.cpus() == 0, 300, "the idle workers to be cancelled", 0.5)
    gone = time.time()
    return {
        "all_cpus_s": t_cpus - t0,
        "all_running_s": t_running - t0,
        "nodes": len({r[1] for r in results}),
        "idle_gone_s": gone - done,
        "window_s": gone - t0,
        "rpcs": out.rpcs_since(before),
    }


def main() -> None:
    ray.init(logging_level="ERROR")
    wait_for(lambda: base.cpus() == 0 and not base.worker_jobs(), 240, "no workers", 1)
    script = Path(P["workdir"]) / "floor.sh"
    base.floor_script(script)
    rounds = []
    for i in range(P["runs"]):
        bare = floor(script, array=False)
        array = floor(script, array=True)
        rounds.append({"floor": bare, "floor_array": array, "ours": ours(i)})
        print(f"round {i + 1}: {json.dumps(rounds[-1])[:300]}", file=sys.stderr, flush=True)
    print("RESULT " + json.dumps({"rounds": rounds}))


if __name__ == "__main__":
    main()
