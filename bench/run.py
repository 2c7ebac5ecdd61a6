"""`make bench`: measure ray_slurm on the local SLURM site; print a table, write JSON.

Run on the site's login node (``scripts/localsite login .venv/bin/python bench/run.py``):
  a  scale-up latency vs its floor (bare sbatch -> RUNNING + bare `ray start` join), ratio
  b  provider cost per autoscaler tick with 1,000 jobs of the cluster in SLURM
  c  `ray down` of a cluster with many nodes: wall time, scancel calls
  d  playbooks/site.yml against inventories/localsite: first and second run
  e  PSS of the head's process tree and of one worker job (measured during a), by process
  f  scale-out 0 -> 6 one-CPU workers vs 6 bare jobs at once; slurmctld RPCs per cluster
  g  peers on the same site: Ray's `ray symmetric-run` recipe, dask-jobqueue's adapt()
  h  the login head's CPU at rest, acting on new demand at once or not
  j  32 nodes: one cluster 0 -> 32 -> 0, ray down of 32 workers + 1,000 held jobs (wide site,
     ``--only j --merge``)
  i  ten clusters of one user under slurmctld's RPC rate limiter (run on campus24, 24.11:
     ``--only i --merge results.json`` adds it to the campus run's results)
  k  capacity around a worker's time limit, roll-over on and off: demand unserved, tasks retried
Each figure is the median of --runs runs; goals are printed next to them and a missed goal
says why. Nothing is tuned to the numbers: product defaults except where noted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
import playbook  # noqa: E402
import provider_cost  # noqa: E402
import restcost  # noqa: E402
import rollover  # noqa: E402
import scaleout  # noqa: E402
import scaleup  # noqa: E402
import teardown  # noqa: E402
import throttle  # noqa: E402
import wide  # noqa: E402
from common import REPO, bench_cluster, log, site_info, user_workdir  # noqa: E402
from report import table  # noqa: E402

from ray_slurm.backends.slurm.client import Slurm  # noqa: E402
from ray_slurm.host.net import route_ip  # noqa: E402

IDLE_MINUTES = 0.1  # workers idle for 6 s are cancelled: the scale-up rounds follow each other


def attempt(name: str, fn, *args: Any) -> dict[str, Any]:
    """Run one benchmark; a failure becomes an unavailable row with its reason."""
    t0 = time.monotonic()
    try:
        result = fn(*args)
    except Exception as exc:  # a benchmark that cannot run is reported, not fatal
        traceback.print_exc()
        result = {"available": False, "why": f"{type(exc).__name__}: {exc}"}
    result.setdefault("available", True)
    result["bench_wall_s"] = round(time.monotonic() - t0, 1)
    log(f"{name} done in {result['bench_wall_s']} s")
    return result


def scale_and_teardown(
    workdir: Path, runs: int, rounds: int, workers: int, held: int, want: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[float]]:
    """a (+e) and f on the first cluster, then c on it and on runs-1 fresh ones."""
    max_workers = workers + held + 4  # adopted held jobs must not exceed it (else cancelled)
    stamp = f"{os.getpid() % 10000}"
    clusters = [
        bench_cluster(f"bench{stamp}{i}", workdir, max_workers, IDLE_MINUTES)
        for i in range(runs if "c" in want else 1)
    ]
    up_times: list[float] = []
    a: dict[str, Any] = {"available": False, "why": "not run"}
    c: dict[str, Any] = {"available": False, "why": "not run"}
    f: dict[str, Any] = {"available": False, "why": "not run"}
    try:
        up_times.append(clusters[0].up("--no-config-cache"))
        if "a" in want:
            a = attempt("a scale-up", scaleup.measure, clusters[0], workdir, rounds)
        if "f" in want:
            f = attempt("f scale-out", scaleout.measure, clusters[0], workdir, runs)
        if "c" in want:
            c = attempt("c teardown", teardown.measure, clusters, workdir, workers, held)
            up_times += [x.up_s for x in clusters[1:] if x.up_s]
    finally:
        for cluster in clusters:
            cluster.cleanup()
    return a, c, f, up_times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="abcdfghk", help="benchmarks to run (e runs with a)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="scale-up rounds for a (default 5)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in SLURM for b")
    parser.add_argument("--ticks", type=int, default=15, help="ticks measured for b")
    parser.add_argument("--others", type=int, default=5000, help="other users' jobs for b")
    parser.add_argument("--held", type=int, default=50, help="held jobs adopted for c")
    parser.add_argument("--wide-held", type=int, default=1000, help="held jobs for j")
    parser.add_argument("--playbook-runs", type=int, default=3, help="first+second pairs for d")
    parser.add_argument("--output", default=str(REPO / "bench" / "results.json"))
    parser.add_argument(
        "--merge",
        action="store_true",
        help="add to the results already in --output (another site's run)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, states)")
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        parser.error(
            "run on the site's login node: scripts/localsite login .venv/bin/python bench/run.py"
        )
    workdir = user_workdir(Path(tempfile.mkdtemp(prefix="rsb-", dir="/tmp")))  # 0700, short
    started = time.time()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "machine": {**site_info(), "host": platform.node()},
        "settings": {
            "runs": args.runs,
            "rounds": args.rounds,
            "jobs": args.jobs,
            "held": args.held,
            "idle_timeout_minutes": IDLE_MINUTES,
        },
    }
    log(f"workdir {workdir}; machine {results['machine']}")
    if "g" in args.only:  # first: symmetric-run needs a machine without any other Ray
        node = next(iter(Slurm().nodes().values()))
        results["g"] = peers.measure(args.rounds, "debug", route_ip(node.addr), workdir)
    if set("acf") & set(args.only):
        a, c, f, ups = scale_and_teardown(workdir, args.runs, args.rounds, 6, args.held, args.only)
        results.update(a=a, c=c, f=f, ray_up_s=ups)
    if "b" in args.only:
        results["b"] = attempt(
            "b provider cost", provider_cost.measure, workdir, args.jobs, args.ticks, args.others
        )
    if "d" in args.only:
        results["d"] = attempt("d playbook", playbook.measure, workdir, args.playbook_runs)
    if "h" in args.only:
        results["h"] = attempt("h head at rest", restcost.measure, workdir)
    if "k" in args.only:
        results["k"] = attempt("k roll-over", rollover.measure, workdir)
    if "j" in args.only:
        results["j"] = attempt("j 32 nodes", wide.measure, workdir, 1, args.wide_held)
        results["j"]["site"] = results["machine"]
    if "i" in args.only:
        results["i"] = attempt("i rate limiter", throttle.measure, workdir)
        results["i"]["site"] = results["machine"]
    results["wall_s"] = round(time.time() - started, 1)
    if args.merge and Path(args.output).exists():
        earlier = json.loads(Path(args.output).read_text())
        results = {**earlier, **{k: results[k] for k in args.only if k in results},
                   "wall_s": earlier.get("wall_s", 0) + results["wall_s"]}  # fmt: skip
    lines = table(results)
    m = results["machine"]
    print(
        f"\nray_slurm benchmarks, {results['date']}, {m['cpus']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, SLURM {m['slurm']} ({m['site_nodes']} nodes), "
        f"Ray {m['ray']}, Python {m.get('site_python', m['python'])}; {results['wall_s']:.0f} s\n"
    )
    print("\n".join(lines))
    Path(args.output).write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nresults: {args.output}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    unavailable = [k for k in "abcdfhijk" if k in args.only and k in results
                   and not results[k].get("available")]  # fmt: skip
    unavailable += [k for k, peer in results.get("g", {}).items() if not peer.get("available")]
    return 1 if unavailable else 0


if __name__ == "__main__":
    sys.exit(main())
