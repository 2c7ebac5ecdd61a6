"""b's driver: the provider's autoscaler ticks, run by the site's Python as the head runs them.

Parameters (JSON, argv[1]): ``name`` (the cluster), ``dir`` (a private directory of this
account's for the state and the provider's log), ``ticks``. The jobs are already in SLURM.
Prints one line ``RESULT {json}``: the first tick, each steady tick (SLURM calls, ms, nodes seen),
one ``squeue`` alone, and one read of the state file.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.cluster import example_config  # noqa: E402

from ray_slurm import config, provider  # noqa: E402
from ray_slurm.slurm import Slurm  # noqa: E402


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
    p = provider.SlurmNodeProvider(cfg["provider"], name)
    first = tick(p)  # adopts every job the state does not know yet (one state write)
    interval = p.settings.autoscaler_interval_s
    steady = []
    for _ in range(ticks):
        time.sleep(interval)
        steady.append(tick(p))
    slurm = Slurm()
    squeue_ms = [timed(slurm.squeue) for _ in range(ticks)]
    result = {
        "tick_interval_s": interval,
        "first": first,
        "steady": steady,
        "squeue_alone_ms": statistics.median(squeue_ms),
        "state_read_ms": statistics.median([timed(p.cluster.read_state) for _ in range(ticks)]),
        "state_kib": p.cluster.state_file.stat().st_size / 1024,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
