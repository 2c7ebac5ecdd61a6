"""`make bench`: measure ray_slurm on the local SLURM site; print a table, write JSON.

Run on the site's login node (``scripts/localsite login .venv/bin/python bench/run.py``):
  a  scale-up latency vs its floor (bare sbatch -> RUNNING + bare `ray start` join), ratio
  b  provider cost per autoscaler tick with 1,000 jobs of the cluster in SLURM
  c  `ray down` of a cluster with many nodes: wall time, scancel calls
  d  playbooks/site.yml against inventories/localsite: first and second run
  e  PSS of the head's process tree and of one worker job (measured during a)
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

import playbook  # noqa: E402
import provider_cost  # noqa: E402
import scaleup  # noqa: E402
import teardown  # noqa: E402
from common import REPO, bench_cluster, log, median, site_info  # noqa: E402

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
    workdir: Path, runs: int, workers: int, held: int, want: str
) -> tuple[dict[str, Any], dict[str, Any], list[float]]:
    """a (+e) on the first cluster, then c on it and on runs-1 fresh ones."""
    max_workers = workers + held + 4  # adopted held jobs must not exceed it (else cancelled)
    stamp = f"{os.getpid() % 10000}"
    clusters = [
        bench_cluster(f"bench{stamp}{i}", workdir, max_workers, IDLE_MINUTES)
        for i in range(runs if "c" in want else 1)
    ]
    up_times: list[float] = []
    a: dict[str, Any] = {"available": False, "why": "not run"}
    c: dict[str, Any] = {"available": False, "why": "not run"}
    try:
        up_times.append(clusters[0].up("--no-config-cache"))
        if "a" in want:
            a = attempt("a scale-up", scaleup.measure, clusters[0], workdir, runs)
        if "c" in want:
            c = attempt("c teardown", teardown.measure, clusters, workdir, workers, held)
            up_times += [x.up_s for x in clusters[1:] if x.up_s]
    finally:
        for cluster in clusters:
            cluster.cleanup()
    return a, c, up_times


def fmt(value: float, unit: str = "s", digits: int = 1) -> str:
    return f"{value:.{digits}f} {unit}".strip()


def n(count: float, noun: str) -> str:
    return f"{count:g} {noun}{'' if count == 1 else 's'}"


def verdict(ok: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[ok]


def table(results: dict[str, Any]) -> list[str]:
    """The Markdown table, and a note under it for each missed goal or unavailable row."""
    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []
    a, b, c, d = (results.get(k, {}) for k in ("a", "b", "c", "d"))

    def unavailable(key: str, what: str, r: dict[str, Any]) -> None:
        rows.append((key, what, "unavailable", "-", "-"))
        notes.append(f"{key}: unavailable: {r.get('why', 'not run')}")

    if a.get("available"):
        fp = a["floor_parts"]
        ph = a["phases"]
        rows.append(
            (
                "a",
                "scale-up: task needing a CPU the cluster lacks -> running on a new SLURM worker",
                f"{fmt(a['latency_s'], digits=2)} ({n(a['runs'], 'run')})",
                f"floor {fmt(a['floor_s'], digits=2)} (sbatch->RUNNING "
                f"{fp['submit_to_running_s']:.2f} + ray start join {fp['join_s']:.2f}); "
                f"ratio {a['ratio']:.2f}, goal <= {a['goal_ratio']}",
                verdict(a["ok"]),
            )
        )
        rows.append(
            (
                "a",
                "  phases: demand->sbatch / sbatch->RUNNING / RUNNING->joined / joined->task",
                " / ".join(f"{ph[k]:.2f}" for k in ph) + " s",
                "-",
                "-",
            )
        )
        if not a["ok"]:
            notes.append(f"a: goal missed: {a['why']}")
    elif a:
        unavailable("a", "scale-up latency", a)
    if b.get("available"):
        first = b["first_tick"]
        rows.append(
            (
                "b",
                f"SLURM calls per autoscaler tick, {b['jobs']} jobs of the cluster in SLURM",
                f"{b['calls_per_tick']:g} ({b['ticks']} ticks)",
                "goal <= 2",
                verdict(b["calls_per_tick"] <= provider_cost.GOAL_CALLS),
            )
        )
        rows.append(
            (
                "b",
                "provider time per tick (non_terminated_nodes + node_tags/is_running "
                f"x {b['nodes_seen']:g})",
                f"{fmt(b['ms_per_tick'], 'ms')} (max {b['max_ms_per_tick']:.0f})",
                f"goal <= 50 ms; one squeue alone {b['squeue_alone_ms']:.0f} ms",
                verdict(b["ms_per_tick"] <= provider_cost.GOAL_MS),
            )
        )
        rows.append(
            (
                "b",
                "  first tick (adopts all jobs into the state)",
                f"{n(first['calls'], 'call')}, {fmt(first['ms'], 'ms', 0)}",
                "-",
                "-",
            )
        )
        if not b["ok"]:
            notes.append(f"b: goal missed: {b['why']}")
        if b.get("left_after_cleanup"):
            notes.append(f"b: {b['left_after_cleanup']} held jobs were left after cleanup")
    elif b:
        unavailable("b", "provider cost at scale", b)
    if c.get("available"):
        rows.append(
            (
                "c",
                f"`ray down`, {c['worker_jobs']:g} worker jobs (6 running + held) "
                "+ login head: wall time",
                f"{fmt(c['wall_s'])} ({n(c['runs'], 'run')})",
                "includes Ray's fixed 5 s wait before it re-checks",
                "-",
            )
        )
        rows.append(
            (
                "c",
                "  scancel calls during `ray down`",
                f"{c['scancel_calls']:g}",
                "goal 1 (one batched call)",
                verdict(c["ok"]),
            )
        )
        if not c["ok"]:
            notes.append(f"c: goal missed: {c['why'] or 'a job was left after ray down'}")
    elif c:
        unavailable("c", "teardown", c)
    if d.get("available"):
        rows.append(
            (
                "d",
                "playbooks/site.yml first run (fresh target dirs)",
                f"{fmt(d['first_s'])}, changed={d['first_changed']:g} ({n(d['runs'], 'run')})",
                "-",
                "-",
            )
        )
        rows.append(
            (
                "d",
                "playbooks/site.yml second run",
                f"{fmt(d['second_s'])}, changed={d['second_changed']:g}",
                "goal changed=0",
                verdict(d["ok"]),
            )
        )
        if not d["ok"]:
            notes.append(f"d: goal missed: {d['why']}")
    elif d:
        unavailable("d", "playbook", d)
    if a.get("available"):
        rows.append(
            (
                "e",
                "PSS of the head (login node: its whole process tree)",
                fmt(a["head_pss_mib"], "MiB", 0),
                "-",
                "-",
            )
        )
        rows.append(
            (
                "e",
                "PSS of one worker job (all its processes, after one task)",
                fmt(a["worker_pss_mib"], "MiB", 0),
                "-",
                "-",
            )
        )
    if results.get("ray_up_s"):
        ups = results["ray_up_s"]
        rows.append(
            (
                "-",
                "`ray up` (login head) wall time",
                f"{fmt(median(ups))} ({n(len(ups), 'run')})",
                "-",
                "-",
            )
        )
    lines = ["| | measure | median | floor / goal | goal met |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="abcd", help="benchmarks to run (e runs with a)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in SLURM for b")
    parser.add_argument("--ticks", type=int, default=10, help="ticks measured for b")
    parser.add_argument("--held", type=int, default=50, help="held jobs adopted for c")
    parser.add_argument("--playbook-runs", type=int, default=3, help="first+second pairs for d")
    parser.add_argument("--output", default=str(REPO / "bench" / "results.json"))
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, states)")
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF"):
        parser.error(
            "run on the site's login node: scripts/localsite login .venv/bin/python bench/run.py"
        )
    workdir = Path(tempfile.mkdtemp(prefix="rsb-", dir="/tmp"))  # 0700, short paths
    started = time.time()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "machine": {**site_info(), "host": platform.node()},
        "settings": {
            "runs": args.runs,
            "jobs": args.jobs,
            "held": args.held,
            "idle_timeout_minutes": IDLE_MINUTES,
        },
    }
    log(f"workdir {workdir}; machine {results['machine']}")
    if "a" in args.only or "c" in args.only:
        a, c, ups = scale_and_teardown(workdir, args.runs, 6, args.held, args.only)
        results.update(a=a, c=c, ray_up_s=ups)
    if "b" in args.only:
        results["b"] = attempt(
            "b provider cost", provider_cost.measure, workdir, args.jobs, args.ticks
        )
    if "d" in args.only:
        results["d"] = attempt("d playbook", playbook.measure, workdir, args.playbook_runs)
    results["wall_s"] = round(time.time() - started, 1)
    lines = table(results)
    m = results["machine"]
    print(
        f"\nray_slurm benchmarks, {results['date']}, {m['cpus']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, SLURM {m['slurm']} ({m['site_nodes']} nodes), "
        f"Ray {m['ray']}; {results['wall_s']:.0f} s\n"
    )
    print("\n".join(lines))
    Path(args.output).write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nresults: {args.output}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    unavailable = [k for k in "abcd" if k in results and not results[k].get("available")]
    return 1 if unavailable else 0


if __name__ == "__main__":
    sys.exit(main())
