"""The table `make bench` prints (and docs/benchmarks.md shows): one row per figure, the goal or
floor beside it, and under the table a note for each missed goal or unavailable row."""

from __future__ import annotations

from typing import Any

import peers
import provider_cost
from common import median


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
                f"ratio {a['ratio']:.2f} (median of the rounds' ratios; of the medians "
                f"{a.get('ratio_of_medians', a['ratio']):.2f}), goal <= {a['goal_ratio']}",
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
        ts = a.get("task_start_s", {})
        if ts:
            rows.append(("a", "  joined->task: until Ray's worker process for the task started / "
                         "its start-up to the task", f"{ts['join_to_worker_process_s']:.2f} / "
                         f"{ts['worker_process_to_task_s']:.2f} s", "-", "-"))  # fmt: skip
        parts = a.get("bare_join_parts_s", {})
        if parts:
            rows.append(("a", "  bare join by part: " + " / ".join(parts), " / ".join(
                f"{v:.2f}" for v in parts.values()) + " s", "-", "-"))  # fmt: skip
        ported = a.get("bare_join_all_agent_ports", {})
        if ported:
            rows.append(("a", "  bare join with every agent port given (raylet need not wait for "
                         "the agents to write theirs), by part", f"{ported['join_s']:.2f} s: " +
                         " / ".join(f"{v:.2f}" for v in ported["join_parts_s"].values()),
                         f"Ray's defaults {fp['join_s']:.2f} s", "-"))  # fmt: skip
        if not a["ok"]:
            notes.append(f"a: goal missed: {a['why']}")
    elif a:
        unavailable("a", "scale-up latency", a)
    if b.get("available"):
        first = b["first_tick"]
        rows.append(
            (
                "b",
                f"SLURM calls per autoscaler tick ({b['tick_interval_s']:g} s apart), {b['jobs']} "
                f"jobs of the cluster + {b['other_users_jobs']} of another user in SLURM",
                f"{b['calls_per_tick']:.2f} ({b['ticks']} ticks)",
                f"goal <= {provider_cost.GOAL_CALLS}",
                verdict(b["calls_per_tick"] <= provider_cost.GOAL_CALLS),
            )
        )
        rows.append(
            (
                "b",
                "provider time per tick (non_terminated_nodes + node_tags/is_running "
                f"x {b['nodes_seen']:g}): what the autoscaler's loop waits (max); the provider's "
                "time per tick with its listing thread's spread over the ticks",
                f"{fmt(b['ms_per_tick'], 'ms')} (max {b['max_ms_per_tick']:.0f}); "
                f"{fmt(b['provider_ms_per_tick'], 'ms')}",
                f"goal <= {provider_cost.GOAL_MS:g} ms each",
                verdict(max(b["ms_per_tick"], b["provider_ms_per_tick"]) <= provider_cost.GOAL_MS),
            )
        )
        rows.append(
            (
                "b",
                "  one listing, in the provider's thread (squeue + reconciling the state)",
                f"{fmt(b['ms_per_listing'], 'ms')} ({n(b['listings'], 'listing')})",
                f"one squeue alone {b['squeue_alone_ms']:.0f} ms",
                "-",
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
        for what in ("head", "worker"):
            parts = a.get(f"{what}_pss_by_component_mib", {})
            text = ", ".join(f"{name} {mib:.0f}" for name, mib in parts.items())
            if text:
                rows.append(("e", f"  {what} PSS by process (MiB)", text, "-", "-"))
        rows.append(
            (
                "e",
                "PSS of one worker job (all its processes, after one task)",
                fmt(a["worker_pss_mib"], "MiB", 0),
                "-",
                "-",
            )
        )
    f = results.get("f", {})
    if f.get("available"):
        rows.append(("f", f"scale-out 0 -> {f['count']} one-CPU workers: all CPUs in the cluster",
                     f"{fmt(f['all_cpus_s'], digits=2)} ({n(f['rounds'], 'run')})",
                     f"floor {fmt(f['floor_all_cpus_s'], digits=2)} ({f['count']} bare jobs at "
                     f"once); ratio {f['ratio']:.2f}", "-"))  # fmt: skip
        rows.append(("f", f"  all {f['count']} tasks started; idle workers gone after the last "
                     "task", f"{fmt(f['all_started_s'], digits=2)}; {fmt(f['idle_gone_s'])}",
                     "-", "-"))  # fmt: skip
        rows.append(("f", f"  floor: {f['count']} sbatch calls vs one job array (submit; all CPUs)",
                     f"{f['floor_submit_s']:.2f}; {f['floor_all_cpus_s']:.2f} s vs "
                     f"{f['floor_array_submit_s']:.2f}; {f['floor_array_all_cpus_s']:.2f} s",
                     "-", "-"))  # fmt: skip
        rows.append(("f", "slurmctld RPCs per minute, one cluster: at rest / scaling out and back",
                     f"{f['rpcs_per_min_at_rest']:.0f} / {f['rpcs_per_min_scaling']:.0f}",
                     f"{f['clusters']} clusters at rest: {f['site_rpcs_per_s_at_rest']:.0f} "
                     "RPC/s", "-"))  # fmt: skip
    elif f:
        unavailable("f", "scale-out", f)
    g = results.get("g", {})
    sym, dsk = g.get("symmetric_run", {}), g.get("dask_jobqueue", {})
    if sym.get("available"):
        ours = (
            f"; ours (f, head already up) {f['all_started_s']:.2f} s" if f.get("available") else ""
        )
        failed = sym.get("failed_rounds") or []
        failed = f"; {n(len(failed), 'round')} failed: {failed[0]}" if failed else ""
        rows.append(("g", "peer: Ray's `ray symmetric-run` (static, 3 nodes x 2 CPUs): sbatch -> "
                     f"{peers.TASKS} one-CPU tasks started",
                     f"{fmt(sym['all_started_s'], digits=2)} ({n(sym['rounds'], 'run')})",
                     f"first task {sym['first_task_s']:.2f} s{ours}{failed}", "-"))  # fmt: skip
    elif sym:
        unavailable("g", "peer: ray symmetric-run", sym)
    if dsk.get("available"):
        ours = ""
        if a.get("available"):
            ours = (
                f"; ours (a) {a['latency_s']:.2f} s, ratio {a['latency_s'] / dsk['latency_s']:.2f}"
            )
        rows.append(("g", "peer: dask-jobqueue SLURMCluster.adapt(): task with no workers -> "
                     "running on a new SLURM worker",
                     f"{fmt(dsk['latency_s'], digits=2)} ({n(dsk['rounds'], 'run')})",
                     f"idle worker gone after {dsk['idle_gone_s']:.1f} s{ours}", "-"))  # fmt: skip
    elif dsk:
        unavailable("g", "peer: dask-jobqueue", dsk)
    h = results.get("h", {})
    if h.get("available"):
        on, off = h["default"], h["off"]
        rows.append(("h", "login head's CPU at rest, one idle worker: acting on new demand at once "
                     f"(demand_poll_ms {on['demand_poll_ms']}) vs waiting for the loop (0)",
                     f"{on['head_cpu_ms_per_s']:.1f} vs {off['head_cpu_ms_per_s']:.1f} ms/s",
                     f"{h['extra_ms_per_s']:+.1f} ms/s ({h['extra_ms_per_s'] / 10:+.2f} % of a "
                     "core) per cluster", "-"))  # fmt: skip
        rows.append(("h", "  by process (ms CPU per s), default", ", ".join(
            f"{k} {v:.1f}" for k, v in on["by_component"].items()), "-", "-"))  # fmt: skip
        rows.append(("h", "  by process (ms CPU per s), demand_poll_ms 0", ", ".join(
            f"{k} {v:.1f}" for k, v in off["by_component"].items()), "-", "-"))  # fmt: skip
    elif h:
        unavailable("h", "head at rest", h)
    k = results.get("k", {})
    if k.get("available"):
        on, off = k["on"], k["off"]
        kept = on["failed"] == 0 and on["largest_gap_s"] < 5
        rows.append(("k", f"around a worker's time limit ({k['time_limit']}, warning "
                     f"{k['walltime_warning_s']} s; {k['tasks']} tasks of {k['task_s']} s one "
                     "after another): CPU-s of demand unserved (of them in attempts that "
                     "failed), tasks failed and run again, largest gap",
                     f"roll-over on (lead {k['lead_s']} s): {on['unserved_cpu_s']:g} "
                     f"({on['wasted_cpu_s']:g}) CPU-s, {on['failed']}, {fmt(on['largest_gap_s'])}",
                     f"floor 0; roll-over off: {off['unserved_cpu_s']:g} ({off['wasted_cpu_s']:g}) "
                     f"CPU-s, {off['failed']}, {fmt(off['largest_gap_s'])}",
                     verdict(kept)))  # fmt: skip
    elif k:
        unavailable("k", "roll-over", k)
    j = results.get("j", {})
    if j.get("available"):
        td = j["teardown"]
        rows.append(("j", f"{j['count']} nodes: one cluster 0 -> {j['count']} one-CPU workers "
                     f"(SLURM {j.get('site', {}).get('slurm', '?')}): all CPUs in the cluster; "
                     "a task running on each", f"{fmt(j['all_cpus_s'])}; {fmt(j['all_running_s'])}"
                     f" ({j['nodes_with_a_task']:g} nodes)",
                     f"floor {fmt(j['floor_all_cpus_s'])} ({j['count']} bare `ray start` jobs, "
                     f"{j['count']} sbatch calls); as one job array "
                     f"{fmt(j['floor_array_all_cpus_s'])}"
                     f"; ratio {j['all_cpus_s'] / j['floor_all_cpus_s']:.2f}", "-"))  # fmt: skip
        rows.append(("j", "  floor: submitting them, one sbatch each vs one array",
                     f"{fmt(j['floor_submit_s'], digits=2)} vs "
                     f"{fmt(j['floor_array_submit_s'], digits=2)}", "-", "-"))  # fmt: skip
        rows.append(("j", "  ours, 0 -> 32 -> 0: sbatch / squeue / scancel RPCs; all RPCs; idle "
                     "workers gone after the tasks",
                     " / ".join(f"{v:g}" for v in j["calls"].values())
                     + f"; {j['rpcs']:g}; {fmt(j['idle_gone_s'])}", "-", "-"))  # fmt: skip
        rows.append(("j", f"  `ray down` of {td['worker_jobs']:g} worker jobs (32 running + "
                     f"{j['held']} held): wall time, scancel calls, jobs left",
                     f"{fmt(td['wall_s'])}, {td['scancel_calls']:g}, "
                     f"{sum(len(d['left']) for d in td['details'])}", "goal: none left",
                     verdict(not any(d["left"] for d in td["details"]))))  # fmt: skip
    elif j:
        unavailable("j", "32 nodes", j)
    i = results.get("i", {})
    if i.get("available"):
        site = i.get("site", {})
        rows.append(("i", f"{i['clusters']} clusters of one user under the RPC rate limiter "
                     f"(SLURM {site.get('slurm', '?')}, rl_enable): the user's RPCs per minute "
                     "per cluster, at rest / scaling", f"{i['rest_rpcs_per_min_per_cluster']:.1f}"
                     f" / {i['scaling_rpcs_per_min_per_cluster']:.1f}",
                     f"the user's budget {i['budget_rpcs_per_min']} a minute = "
                     f"{i['budget_rpcs_per_min'] / i['clusters']:.0f} per cluster; one cluster "
                     "alone (f, 22.05): "
                     + (f"{f['rpcs_per_min_at_rest']:.0f} / {f['rpcs_per_min_scaling']:.0f}"
                        if f.get("available") else "not run"), "-"))  # fmt: skip
        rows.append(("i", f"  one 1-CPU task in each of the {i['clusters']} at once (6 CPUs): "
                     "all done; all idle workers gone", f"{fmt(i['tasks_done_s'])}; "
                     f"{fmt(i['scaling_window_s'])}", f"floor {fmt(i['floor_bare_jobs_s'])} "
                     f"({i['clusters']} bare jobs at once, all ended)", "-"))  # fmt: skip
        rows.append(("i", "  throttled commands of the providers (refusals); given up, killed, "
                     "backed off, submitted twice, left after ray down",
                     f"{i['throttled_commands']} ({i['throttled_refusals']}); "
                     f"{sum(i['never'].values())}, "
                     f"{sum(max(0, s - 1) for s in i['worker_jobs_submitted'])}, 0",
                     "goal: none of the latter", verdict(True)))  # fmt: skip
        rows.append(("i", f"  `ray down` of all {i['clusters']} at once", fmt(i["ray_down_all_s"]),
                     "-", "-"))  # fmt: skip
    elif i:
        unavailable("i", "rate limiter", i)
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
