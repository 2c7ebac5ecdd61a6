"""b's driver: the provider's autoscaler ticks, run by the site's Python as the head runs them.

Parameters (JSON, argv[1]): ``name`` (the cluster), ``dir`` (a private directory of this
account's for the state and the provider's log), ``ticks``. The jobs are already in SLURM.
The provider is made as in the head's autoscaler (its uploaded config in the cluster directory,
the job's environment variable naming it), so it lists in its own thread (``listing``).
Prints one line ``RESULT {json}``: the first tick, each steady tick (SLURM calls in the tick,
ms, nodes seen), the SLURM calls and listing time of the whole steady run (the thread's
included), one ``squeue`` alone, and one read of the state file.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import yaml  # noqa: E402
from support.cluster import example_config  # noqa: E402

from ray_slurm import config
from ray_slurm.autoscaler import provider  # noqa: E402
from ray_slurm.backends.slurm.client import Slurm  # noqa: E402
from ray_slurm.cluster import burst
from ray_slurm.host.state import ClusterDir, write_private  # noqa: E402


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


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main() -> None:
    params = json.loads(sys.argv[1])
    own, name, ticks = Path(params["dir"]), params["name"], int(params["ticks"])
    cfg = config.bootstrap(config.fillout_resources(example_config(name, own / "state")))
    # The autoscaler logs at INFO into monitor.log: so does the provider here (not to stdout).
    logging.getLogger("ray_slurm").addHandler(logging.FileHandler(own / "provider-cost.log"))
    logging.getLogger("ray_slurm").setLevel(logging.INFO)
    cluster = ClusterDir(own / "state", name).create()  # as `ray up` leaves it for the head
    write_private(cluster.bootstrap_config, yaml.safe_dump(cfg))
    os.environ[burst.AUTOSCALING_CONFIG_ENV] = str(cluster.autoscaling_config)
    p = provider.SlurmNodeProvider(cfg["provider"], name)
    slurm_calls = p.backends["slurm"].slurm
    first = tick(p)  # adopts every job the state does not know yet (one state write)
    interval = p.settings.autoscaler_interval_s
    steady = []
    calls, listings, listing_s = slurm_calls.calls, p.listing.listings, p.listing.listing_s
    for _ in range(ticks):
        time.sleep(interval)
        steady.append(tick(p))
    p.listing.stop()
    listings = p.listing.listings - listings
    slurm = Slurm()
    squeue_ms = [timed(slurm.squeue) for _ in range(ticks)]
    result = {
        "tick_interval_s": interval,
        "first": first,
        "steady": steady,
        "steady_calls": slurm_calls.calls - calls,
        "steady_listings": listings,
        "steady_listing_s": p.listing.listing_s - listing_s,
        "squeue_alone_ms": statistics.median(squeue_ms),
        "state_read_ms": statistics.median([timed(p.cluster.read_state) for _ in range(ticks)]),
        "state_kib": p.cluster.state_file.stat().st_size / 1024,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
