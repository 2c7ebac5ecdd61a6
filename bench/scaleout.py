"""f. Scale-out 0 -> 6 one-CPU workers against 6 bare jobs at once; slurmctld's RPCs per cluster.

The site's 3 nodes x 2 CPUs hold 6 one-CPU workers. The floor submits 6 bare jobs at once (6
sbatch calls, and as one job array, to see whether arrays would help); ours runs 6 one-CPU tasks
on a cluster without workers (``scaleout_driver``). slurmctld's RPCs (sdiag) are counted while
ours scales out and back, and over a minute of the idle cluster (20 s after the last worker
left); those the product sends (not slurmd's, not sdiag's) are what one cluster costs the
site's controller, and what 200 would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import log, median
from scaleup import driver_params, run_driver
from support.cluster import Cluster

DRIVER = Path(__file__).resolve().parent / "scaleout_driver.py"
COUNT = 6
CLUSTERS = 200  # a busy site's active clusters, for the load estimate


# What slurmd and the benchmark itself send slurmctld (jobs ending, node pings, sdiag): not
# the product's calls, though the jobs are the cluster's. All types stay in the JSON.
NOT_SENT_BY_PRODUCT = {
    "REQUEST_COMPLETE_BATCH_SCRIPT",
    "REQUEST_COMPLETE_PROLOG",
    "REQUEST_STEP_COMPLETE",
    "REQUEST_STATS_INFO",
}


def sent_by_product(rpcs: dict[str, float]) -> float:
    return sum(
        n for t, n in rpcs.items() if not t.startswith("MESSAGE_") and t not in NOT_SENT_BY_PRODUCT
    )


def per_minute(window: dict[str, Any]) -> float:
    """The RPCs the product sent slurmctld per minute in a window (squeue, sbatch, scancel)."""
    return sent_by_product(window["rpcs"]) * 60 / window["window_s"]


def measure(cluster: Cluster, workdir: Path, rounds: int) -> dict[str, Any]:
    params = {**driver_params(cluster, workdir, rounds), "count": COUNT}
    out = run_driver(DRIVER, cluster, params, 600 + 240 * rounds)
    rs = out["rounds"]

    def m(part: str, key: str) -> float:
        return median([r[part][key] for r in rs])

    ours_cpus, floor_cpus = m("ours", "all_cpus_s"), m("floor", "all_cpus_s")
    rest = per_minute(out["rest"])
    scaling = median([per_minute(r["ours"]) for r in rs])
    by_type: dict[str, int] = {}
    for r in rs:
        for name, count in r["ours"]["rpcs"].items():
            by_type[name] = by_type.get(name, 0) + count
    by_type = dict(sorted(by_type.items(), key=lambda item: -item[1]))
    log(f"scale-out: all CPUs after {ours_cpus:.2f} s vs floor {floor_cpus:.2f} s")
    return {
        "count": COUNT,
        "rounds": len(rs),
        "all_cpus_s": ours_cpus,
        "all_started_s": m("ours", "all_started_s"),
        "idle_gone_s": m("ours", "idle_gone_s"),
        "floor_all_cpus_s": floor_cpus,
        "floor_submit_s": m("floor", "submit_s"),
        "floor_array_all_cpus_s": m("floor_array", "all_cpus_s"),
        "floor_array_submit_s": m("floor_array", "submit_s"),
        "ratio": ours_cpus / floor_cpus,
        "rpcs_per_min_at_rest": rest,
        "rpcs_at_rest_by_type": out["rest"]["rpcs"],
        "rpcs_per_min_scaling": scaling,
        "rpcs_scaling_by_type": {
            k: v / len(rs) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])
        },  # fmt: skip
        "site_rpcs_per_s_at_rest": rest * CLUSTERS / 60,
        "clusters": CLUSTERS,
        "raw": out,
    }
