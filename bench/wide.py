"""j. 32 nodes: one cluster scales 0 -> 32 one-CPU workers, a task on each, back to 0; then
``ray down`` of 32 workers plus 1,000 held jobs of the cluster.

Run on the wide site (``scripts/sites/wide.yaml``: 32 one-CPU nodes, Slurm 22.05). The floor is
32 bare `ray start` jobs joining the same head (as many sbatch calls, and as one job array:
whether one RPC instead of 32 would help). Ours holds each of 32 tasks until all run, so the
demand stays at 32 CPUs until the cluster has them (``wide_driver``). slurmctld's RPCs by type
(sdiag) are counted meanwhile: REQUEST_SUBMIT_BATCH_JOB is sbatch, REQUEST_JOB_USER_INFO squeue,
REQUEST_KILL_JOB scancel. The teardown is c's (``teardown``), with 32 workers and 1,000 jobs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import teardown
from common import bench_cluster, log, median
from scaleup import driver_params, run_driver

from ray_slurm.backends.slurm.client import Slurm

DRIVER = Path(__file__).resolve().parent / "wide_driver.py"
# At most max(5, 0.1 x joined) nodes starting: 5 until 50 have joined (the floor's WAVE).
UPSCALING_SPEED = 0.1
CALLS = {"sbatch": "REQUEST_SUBMIT_BATCH_JOB", "squeue": "REQUEST_JOB_USER_INFO",
         "scancel": "REQUEST_KILL_JOB"}  # fmt: skip


def measure(workdir: Path, runs: int, held: int) -> dict[str, Any]:
    count = len(Slurm().nodes())
    if count < 32:
        raise RuntimeError(f"this site has {count} nodes: run j on the wide site (32)")
    name = f"wide{os.getpid() % 10000}"
    # Nodes start 5 at a time (``startpace``): more on this 2-core machine time out registering.
    cluster = bench_cluster(name, workdir, count + held + 4, 0.1, upscaling_speed=UPSCALING_SPEED)
    try:
        cluster.up("--no-config-cache")
        params = {**driver_params(cluster, workdir, runs), "count": count}
        rs = run_driver(DRIVER, cluster, params, 900 + 900 * runs)["rounds"]
    finally:
        cluster.cleanup()
    # The teardown on a cluster of its own whose workers stay while the held jobs are submitted:
    # adopted as pending nodes of the type, they count as capacity for Ray's autoscaler, and
    # workers idle for 0.1 min would be gone before `ray down` (as the first run of j found).
    down = teardown.measure([bench_cluster(f"{name}d", workdir, count + held + 4, 5,
                                           upscaling_speed=UPSCALING_SPEED)],
                            workdir, count, held)  # fmt: skip

    def m(part: str, key: str) -> float:
        return median([r[part][key] for r in rs])

    calls = {cmd: median([r["ours"]["rpcs"].get(rpc, 0) for r in rs]) for cmd, rpc in CALLS.items()}
    result = {
        "count": count,
        "rounds": len(rs),
        "all_cpus_s": m("ours", "all_cpus_s"),
        "all_running_s": m("ours", "all_running_s"),
        "nodes_with_a_task": m("ours", "nodes"),
        "idle_gone_s": m("ours", "idle_gone_s"),
        "floor_all_cpus_s": m("floor", "all_cpus_s"),
        "floor_submit_s": m("floor", "submit_s"),
        "floor_array_all_cpus_s": m("floor_array", "all_cpus_s"),
        "floor_array_submit_s": m("floor_array", "submit_s"),
        "calls": calls,
        "rpcs": median([sum(r["ours"]["rpcs"].values()) for r in rs]),
        "held": held,
        "teardown": down,
        "raw": rs,
    }
    log(f"32 nodes: all CPUs after {result['all_cpus_s']:.1f} s (floor "
        f"{result['floor_all_cpus_s']:.1f} s); ray down {down['wall_s']:.1f} s")  # fmt: skip
    if not down["ok"] and any(d["left"] for d in down["details"]):
        result.update(available=False, why=f"jobs left after ray down: {down['details']}")
    return result
