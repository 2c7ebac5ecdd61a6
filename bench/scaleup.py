"""a. Scale-up latency against its floor, and e. memory (PSS) of the head and of a worker job."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from common import BENCH_USER, log, median
from support.cluster import Cluster
from support.drivers import result

from ray_slurm import config
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.host.state import ClusterDir

GOAL_RATIO = 1.25
DRIVER = Path(__file__).resolve().parent / "scaleup_driver.py"


def driver_params(cluster: Cluster, workdir: Path, runs: int) -> dict[str, Any]:
    """What a driver (scaleup_driver, scaleout_driver) needs to know of the cluster and site."""
    cfg = config.bootstrap(config.fillout_resources(copy.deepcopy(cluster.config)))
    settings = config.load_settings(cfg["provider"], cfg["cluster_name"])
    spec = settings.spec("cpu")
    head = cluster.head()
    return {
        "cluster": cluster.name,
        "workdir": str(workdir),
        "runs": runs,
        "address": f"{head['ip']}:{head['gcs_port']}",
        "token": str(ClusterDir(settings.state_dir, cluster.name).token_file),
        "ca_file": str(ClusterDir(settings.state_dir, cluster.name).ca_file),
        "node_addrs": {n.name: n.addr for n in Slurm().nodes().values()},
        "partition": spec.slurm.get("partition", "debug"),
        "cpus": spec.cpus,
        "memory_mb": spec.memory_mb,
        "ray_memory": int(spec.resources["memory"]),
        "object_store": spec.object_store_bytes,
        "ray": BENCH_USER.bin("ray"),
        "head_pid": cluster.login_head_pid(),
    }


def run_driver(driver: Path, cluster: Cluster, params: dict[str, Any], timeout: float) -> Any:
    """``driver`` (its copy in the work dir) run by the cluster's user with its Python."""
    copy = Path(params["workdir"]) / "code" / "bench" / driver.name
    args = [cluster.user.bin("python"), str(copy), json.dumps(params)]
    return result(cluster.user.run(args, timeout=timeout, env=cluster.env()).stdout)


def measure(cluster: Cluster, workdir: Path, runs: int) -> dict[str, Any]:
    params = driver_params(cluster, workdir, runs)
    helpers_s = median([helper_time() for _ in range(3)])
    rounds = run_driver(DRIVER, cluster, params, 300 + 120 * runs)["rounds"]
    return summarize(rounds, helpers_s)


def helper_time() -> float:
    """What the worker script runs before `ray start`: `ray-slurm-node` (address and a port)."""
    node = next(iter(Slurm().nodes()))
    t0 = time.monotonic()
    BENCH_USER.run([BENCH_USER.bin("ray-slurm-node"), "1", "--seed", "1", "--node", node])
    return time.monotonic() - t0


def medians(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Key by key, the median over the dicts that have it (in the first one's order)."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    return {k: round(median([d[k] for d in dicts if k in d]), 3) for k in keys}


def summarize(rounds: list[dict[str, Any]], helpers_s: float) -> dict[str, Any]:
    def m(part: str, key: str) -> float:
        return median([r[part][key] for r in rounds if key in r[part]])

    latency = m("provider", "latency_s")
    floor = m("floor", "floor_s")
    ratio = median([r["provider"]["latency_s"] / r["floor"]["floor_s"] for r in rounds])
    phases = {
        k: m("provider", k)
        for k in (
            "demand_to_submit_s",
            "submit_to_running_s",
            "running_to_join_s",
            "join_to_task_s",
        )
    }
    # joined -> task, split: until the worker process that runs the task started, and its start-up
    task_start = {k: m("provider", k) for k in ("join_to_worker_process_s",
                                                "worker_process_to_task_s")}  # fmt: skip
    floor_parts = {k: m("floor", k) for k in ("submit_to_running_s", "join_s")}
    join_parts = medians([r["floor"].get("join_parts", {}) for r in rounds])
    ported = [r["floor_all_agent_ports"] for r in rounds if "floor_all_agent_ports" in r]
    all_ports = (
        {
            "join_s": median([f["join_s"] for f in ported]),
            "join_parts_s": medians([f.get("join_parts", {}) for f in ported]),
        }
        if ported
        else {}
    )
    head_pss = medians([r["provider"].get("head_pss_by_component", {}) for r in rounds])
    worker_pss = medians([r["provider"].get("worker_pss_by_component", {}) for r in rounds])
    why = ""
    if ratio > GOAL_RATIO:
        joins = [
            r["provider"]["running_to_join_s"]
            for r in rounds
            if "running_to_join_s" in r["provider"]
        ]
        bare = [r["floor"]["join_s"] for r in rounds]
        why = (
            f"demand -> sbatch {phases['demand_to_submit_s']:.2f} s (the GCS pulls the raylets' "
            f"queued tasks and the autoscaler asks the GCS for new demand every "
            f"provider.demand_poll_ms = 100 ms); RUNNING -> joined "
            f"{phases['running_to_join_s']:.1f} s ({min(joins):.1f}-{max(joins):.1f}) vs "
            f"{floor_parts['join_s']:.1f} s ({min(bare):.1f}-{max(bare):.1f}) bare, of which the "
            f"node script's helper (ray-slurm-node) takes {helpers_s:.1f} s; the bare join "
            f"itself is mostly `ray start`'s Python start-up and the dashboard agent the raylet "
            f"waits for (see its parts); joined -> task {phases['join_to_task_s']:.1f} s (the "
            f"Python worker Ray starts on the new node once its raylet registered; the floor "
            f"stops when the CPU shows)"
        )
    log(f"scale-up: {latency:.2f} s vs floor {floor:.2f} s (ratio {ratio:.2f})")
    return {
        "runs": len(rounds),
        "latency_s": latency,
        "floor_s": floor,
        "floor_parts": floor_parts,
        "ratio": ratio,
        "ratio_of_medians": latency / floor,
        "goal_ratio": GOAL_RATIO,
        "ok": ratio <= GOAL_RATIO,
        "phases": phases,
        "task_start_s": task_start,
        "node_script_helpers_s": helpers_s,
        "why": why,
        "head_pss_mib": m("provider", "head_pss_mib"),
        "worker_pss_mib": m("provider", "worker_pss_mib"),
        "bare_join_parts_s": join_parts,
        "bare_join_all_agent_ports": all_ports,
        "head_pss_by_component_mib": head_pss,
        "worker_pss_by_component_mib": worker_pss,
        "rounds": rounds,
    }
