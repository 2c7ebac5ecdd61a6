"""b. Provider cost at scale: autoscaler ticks with 1,000 jobs of the cluster and 5,000 jobs of
another user in SLURM.

The jobs are held (``sbatch --hold``): real jobs in slurmctld that never take a node; the other
user's are rsl-bob's. The provider is the real SlurmNodeProvider of a bootstrapped config; a tick
is what autoscaler v2's NodeProviderAdapter.get_non_terminated does: non_terminated_nodes({}),
then node_tags and is_running for every node. Ticks are the autoscaler's interval apart (the
provider's default, 1 s), so most reuse the last listing (squeue_interval_s, 5 s): SLURM calls
are counted by the provider's own wrapper (Slurm.calls); the time of a tick that lists and of
one that does not are reported apart.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import log, median
from support.cluster import example_config
from support.procs import run
from teardown import submit_held

from ray_slurm import config, provider
from ray_slurm.nodes import JobState
from ray_slurm.slurm import Slurm

GOAL_CALLS = 1  # per tick
GOAL_MS = 30.0  # per tick that lists
OTHER_USER = "rsl-bob"


def tick(p: provider.SlurmNodeProvider) -> tuple[int, float, int]:
    """One autoscaler tick: (SLURM calls, milliseconds, nodes seen)."""
    slurm = p.backends["slurm"].slurm  # the SLURM backend's wrapper counts the commands it runs
    calls = slurm.calls
    t0 = time.perf_counter()
    ids = p.non_terminated_nodes({})
    for node_id in ids:
        p.node_tags(node_id)
        p.is_running(node_id)
    return slurm.calls - calls, (time.perf_counter() - t0) * 1000, len(ids)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def measure(workdir: Path, jobs: int, ticks: int, others: int) -> dict[str, Any]:
    name = f"bcost{int(time.time()) % 100000}"
    # The provider runs here as the harness (root): its state dir must be root's all the way
    # up, and the work dir is the bench user's.
    own = Path(tempfile.mkdtemp(prefix="rsb-b-", dir="/tmp"))
    cfg = config.bootstrap(config.fillout_resources(example_config(name, own / "state")))
    # The autoscaler logs at INFO into monitor.log: so does the provider here (not to stdout).
    handler = logging.FileHandler(own / "provider-cost.log")
    logging.getLogger("ray_slurm").addHandler(handler)
    logging.getLogger("ray_slurm").setLevel(logging.INFO)
    slurm = Slurm()
    t0 = time.monotonic()
    ids: list[str] = []
    try:
        other_ids = submit_held("other.work", others, workdir, user=OTHER_USER)
        ids = submit_held(f"ray.{name}.worker.cpu", jobs, workdir)
        submit_s = time.monotonic() - t0
        log(f"provider cost: {len(ids)} + {len(other_ids)} held jobs submitted in {submit_s:.1f} s")
        p = provider.SlurmNodeProvider(cfg["provider"], name)
        first = tick(p)  # adopts every job the state does not know yet (one state write)
        interval = p.settings.autoscaler_interval_s
        steady = []
        for _ in range(ticks):
            time.sleep(interval)
            steady.append(tick(p))
        squeue_ms = []
        for _ in range(ticks):
            t = time.perf_counter()
            slurm.squeue()
            squeue_ms.append((time.perf_counter() - t) * 1000)
        state_ms = median([timed(p.cluster.read_state) for _ in range(ticks)])
        state_kib = p.cluster.state_file.stat().st_size / 1024
    finally:
        cancel_calls = slurm.calls
        slurm.scancel(ids)  # one call for all of them
        cancel_calls = slurm.calls - cancel_calls
        # jobs of a submission that failed half-way have no id here: cancelled by name
        run(["scancel", f"--name=ray.{name}.worker.cpu"], timeout=120, check=False)
        run(["scancel", f"--user={OTHER_USER}", "--name=other.work"], timeout=120, check=False)
        logging.getLogger("ray_slurm").removeHandler(handler)
        shutil.rmtree(own, ignore_errors=True)
    left = [j for j in slurm.squeue() if j.job_id in set(ids) and j.state is not JobState.GONE]
    calls = sum(s[0] for s in steady) / len(steady)
    listing = [s[1] for s in steady if s[0]]
    cached = [s[1] for s in steady if not s[0]]
    ms = median(listing)
    why = []
    if calls > GOAL_CALLS:
        why.append(f"{calls:.2f} SLURM calls per tick")
    if ms > GOAL_MS:
        why.append(
            f"one squeue of {jobs}+ jobs (with parsing) alone takes {median(squeue_ms):.0f} ms "
            f"here (process start, munge, slurmctld RPC, 2 cores); the provider's own "
            f"{ms - median(squeue_ms):.0f} ms include reading its state file "
            f"({state_kib:.0f} KiB: the tags of {jobs} nodes) twice per listing, "
            f"{state_ms:.1f} ms each"
        )
    log(
        f"provider cost: {calls:.2f} calls per tick, {ms:.1f} ms per listing tick; squeue alone "
        f"{median(squeue_ms):.1f} ms"
    )
    return {
        "jobs": len(ids),
        "nodes_seen": median([s[2] for s in steady]),
        "ticks": len(steady),
        "calls_per_tick": calls,
        "other_users_jobs": len(other_ids),
        "tick_interval_s": interval,
        "ms_per_listing_tick": ms,
        "ms_per_cached_tick": median(cached),
        "max_ms_per_tick": max(s[1] for s in steady),
        "first_tick": {"calls": first[0], "ms": first[1], "nodes": first[2]},
        "squeue_alone_ms": median(squeue_ms),
        "state_read_ms": state_ms,
        "state_kib": state_kib,
        "submit_s": submit_s,
        "cleanup_scancel_calls": cancel_calls,
        "left_after_cleanup": len(left),
        "ok": calls <= GOAL_CALLS and ms <= GOAL_MS,
        "why": "; ".join(why),
    }
