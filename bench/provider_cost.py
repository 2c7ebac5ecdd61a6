"""b. Provider cost at scale: autoscaler ticks with 1,000 jobs of the cluster and 5,000 jobs of
another user in SLURM.

The jobs are held (``sbatch --hold``): real jobs in slurmctld that never take a node; the other
user's are rsl-bob's. The provider is the real SlurmNodeProvider of a bootstrapped config, run by
the site's Python (``provider_cost_driver``, as a head's autoscaler runs it); a tick
is what autoscaler v2's NodeProviderAdapter.get_non_terminated does: non_terminated_nodes({}),
then node_tags and is_running for every node. Ticks are the autoscaler's interval apart (the
provider's default, 1 s). As in the head's autoscaler, the provider renews its listing
(squeue_interval_s, 5 s) in a thread of its own (``listing``), so a tick answers from memory:
reported are the tick's own time (what the autoscaler's loop waits), the time of one listing in
that thread, and the provider's time per tick with the thread's listings spread over the ticks.
SLURM calls are counted by the provider's own wrapper (Slurm.calls), the thread's included.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import log, median
from support.accounts import site_ray_env
from support.drivers import result
from support.procs import run
from teardown import submit_held

from ray_slurm.backends.nodes import JobState
from ray_slurm.backends.slurm.client import Slurm

GOAL_CALLS = 1  # per tick
GOAL_MS = 30.0  # per tick: the loop's wait, and the provider's time with its listing thread
OTHER_USER = "rsl-bob"
DRIVER = Path(__file__).resolve().parent / "provider_cost_driver.py"


def measure(workdir: Path, jobs: int, ticks: int, others: int) -> dict[str, Any]:
    name = f"bcost{int(time.time()) % 100000}"
    # The provider runs as the harness (root) with the site's Python (what a head runs), from
    # a directory of root's: the work dir is the bench user's, and the provider refuses a state
    # dir under another account's directory.
    own = Path(tempfile.mkdtemp(prefix="rsb-b-", dir="/tmp"))
    slurm = Slurm()
    t0 = time.monotonic()
    ids: list[str] = []
    try:
        other_ids = submit_held("other.work", others, workdir, user=OTHER_USER)
        ids = submit_held(f"ray.{name}.worker.cpu", jobs, workdir)
        submit_s = time.monotonic() - t0
        log(f"provider cost: {len(ids)} + {len(other_ids)} held jobs submitted in {submit_s:.1f} s")
        params = json.dumps({"name": name, "dir": str(own), "ticks": ticks})
        out = run([str(site_ray_env() / "bin" / "python"), str(DRIVER), params], timeout=300)
        got = result(out.stdout)
    finally:
        cancel_calls = slurm.calls
        slurm.scancel(ids)  # one call for all of them
        cancel_calls = slurm.calls - cancel_calls
        # jobs of a submission that failed half-way have no id here: cancelled by name
        run(["scancel", f"--name=ray.{name}.worker.cpu"], timeout=120, check=False)
        run(["scancel", f"--user={OTHER_USER}", "--name=other.work"], timeout=120, check=False)
        shutil.rmtree(own, ignore_errors=True)
    first, steady, interval = got["first"], got["steady"], got["tick_interval_s"]
    squeue_alone_ms, state_ms, state_kib = (
        got["squeue_alone_ms"],
        got["state_read_ms"],
        got["state_kib"],
    )
    left = [j for j in slurm.squeue() if j.job_id in set(ids) and j.state is not JobState.GONE]
    ticks_ms = [s[1] for s in steady]
    calls = got["steady_calls"] / len(steady)  # the listing thread's calls included
    tick_ms = median(ticks_ms)
    listing_ms = got["steady_listing_s"] * 1000 / max(1, got["steady_listings"])
    provider_ms = (sum(ticks_ms) + got["steady_listing_s"] * 1000) / len(steady)
    why = []
    if calls > GOAL_CALLS:
        why.append(f"{calls:.2f} SLURM calls per tick")
    if max(tick_ms, provider_ms) > GOAL_MS:
        why.append(
            f"the autoscaler's tick takes {tick_ms:.0f} ms, the provider {provider_ms:.0f} ms per "
            f"tick with its listing thread: one squeue of {jobs}+ jobs (with parsing) alone takes "
            f"{squeue_alone_ms:.0f} ms here, and a listing also reads its state file "
            f"({state_kib:.0f} KiB: the tags of {jobs} nodes), {state_ms:.1f} ms each"
        )
    log(
        f"provider cost: {calls:.2f} calls per tick, {tick_ms:.1f} ms per tick, a listing "
        f"{listing_ms:.1f} ms (in its thread), {provider_ms:.1f} ms of the provider per tick; "
        f"squeue alone {squeue_alone_ms:.1f} ms"
    )
    return {
        "jobs": len(ids),
        "nodes_seen": median([s[2] for s in steady]),
        "ticks": len(steady),
        "calls_per_tick": calls,
        "other_users_jobs": len(other_ids),
        "tick_interval_s": interval,
        "ms_per_tick": tick_ms,
        "max_ms_per_tick": max(ticks_ms),
        "listings": got["steady_listings"],
        "ms_per_listing": listing_ms,
        "provider_ms_per_tick": provider_ms,
        "first_tick": {"calls": first[0], "ms": first[1], "nodes": first[2]},
        "squeue_alone_ms": squeue_alone_ms,
        "state_read_ms": state_ms,
        "state_kib": state_kib,
        "submit_s": submit_s,
        "cleanup_scancel_calls": cancel_calls,
        "left_after_cleanup": len(left),
        "ok": calls <= GOAL_CALLS and max(tick_ms, provider_ms) <= GOAL_MS,
        "why": "; ".join(why),
    }
