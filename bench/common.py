"""What the benchmarks share beyond the test-support package: a benchmark cluster, PSS, medians.

Everything here runs on the local site's login node (``scripts/localsite login``), as a user
would: real SLURM, real ``ray up``/``ray down``, nothing faked. Commands, waits, clusters and
SLURM polling are the harness the end-to-end tests use (``tests/support``). The clusters and
their drivers are a site user's (``BENCH_USER``), with the site's Ray environment on PATH, as
the e2e tests run them: this harness's own Python (a development build) starts Ray three times
slower than the site's, and measuring with it measured the wrong Python.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.accounts import Account, User  # noqa: E402
from support.cluster import Cluster, example_config  # noqa: E402
from support.drivers import result  # noqa: E402
from support.procs import run  # noqa: E402

from ray_slurm.backends.slurm.client import Slurm  # noqa: E402

HARNESS = Account()
BIN = Path(HARNESS.bin("python")).parent  # the harness's tools (ansible-playbook, ...)
BENCH_USER = User("rsl-eve")  # whose clusters are measured


def user_workdir(workdir: Path) -> Path:
    """The benchmark's work dir, made the bench user's, with a copy of the drivers and the
    test-support package it runs (the repository may sit in root's private home)."""
    os.chown(workdir, BENCH_USER.uid, BENCH_USER.uid)
    code = workdir / "code"
    for part in ("bench", "tests/support", "examples"):
        if not (code / part).exists():
            shutil.copytree(REPO / part, code / part,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return workdir


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def site_info() -> dict[str, Any]:
    """The machine and the site, for the results file."""
    config = run(["scontrol", "show", "config"], check=False).stdout
    limits = {}
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("MaxJobCount", "MaxArraySize", "MinJobAge", "SLURM_VERSION"):
            limits[key.strip()] = value.strip()
    import ray

    mem_kb = int(
        next(
            ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
        ).split()[1]
    )
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    nodes = Slurm().nodes()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024**2, 1),
        "kernel": os.uname().release,
        "ray": ray.__version__,
        "python": sys.version.split()[0],  # the harness's (b, d)
        "site_python": BENCH_USER.run([BENCH_USER.bin("python"), "-V"]).stdout.split()[-1],
        "slurm": limits.pop("SLURM_VERSION", "?"),
        "slurm_limits": limits,
        "site_nodes": len(nodes),
    }


# ----------------------------------------------------------------------------- a cluster


def bench_cluster(
    name: str, workdir: Path, max_workers: int, idle_minutes: float, cpus: int = 1,
    memory: str = "1000M", min_workers: int = 0, provider: dict[str, Any] | None = None,
    upscaling_speed: float = 1.0, node_config: dict[str, Any] | None = None,
) -> Cluster:  # fmt: skip
    """A login-mode cluster of the bench user's from a copy of the example: 1-CPU workers
    (``provider``, ``node_config``: settings that differ from the example's)."""
    cfg = example_config(name, workdir / "state")
    cfg["upscaling_speed"] = upscaling_speed
    cfg["idle_timeout_minutes"] = idle_minutes
    cfg["max_workers"] = max_workers
    cfg["provider"].update(provider or {})
    cpu = cfg["available_node_types"]["cpu"]
    cpu["node_config"].update({"cpus": cpus, "memory": memory, **(node_config or {})})
    cpu["max_workers"] = max_workers
    cpu["min_workers"] = min_workers
    return Cluster(name, workdir, BENCH_USER, cfg)


def driver(cluster: Cluster, code: str, timeout: float = 600) -> Any:
    """Run a driver script on the login node; it prints one JSON line starting with RESULT."""
    return result(cluster.driver(code, timeout=timeout).stdout)


# ---------------------------------------------------------------------------------- memory


def pss_kib(pids: Sequence[int]) -> int:
    """Sum of Pss over processes (/proc/<pid>/smaps_rollup); vanished processes count 0."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
    return total


def _all_processes() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _all_processes().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def job_processes(job_id: str) -> list[int]:
    """Processes of a SLURM job: those whose environment carries its SLURM_JOB_ID.

    The local site's nodes share this machine's pid namespace, so the login node can read them.
    """
    needle = f"SLURM_JOB_ID={job_id}\0".encode()
    found = []
    for pid in _all_processes():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ:
            found.append(pid)
    return found


# What each Ray process of a node is, from its command line (first match wins: a dashboard
# module's title names the forkserver it came from).
COMPONENTS = (
    ("gcs_server", "/gcs_server "),
    ("raylet", "/raylet "),
    ("dashboard modules (subprocesses)", "ray-dashboard-"),
    ("dashboard head", "dashboard/dashboard.py"),
    ("dashboard forkserver + resource tracker", "multiprocessing."),
    ("dashboard agent", "DashboardAgent"),
    ("dashboard agent", "dashboard/agent.py"),
    ("runtime env agent", "RuntimeEnvAgent"),
    ("runtime env agent", "runtime_env/agent/main.py"),
    ("autoscaler (monitor.py)", "/monitor.py"),
    ("log monitor", "log_monitor.py"),
    ("Ray client server", "ray.util.client.server"),
    ("`ray start --block` (waits)", "bin/ray start"),
    ("Python workers", "ray::"),
    ("Python workers", "default_worker.py"),
)


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def component(pid: int) -> str:
    """The Ray component a process is (``COMPONENTS``; anything else is "other": the job's
    shell, srun, sleep, ...)."""
    line = command_line(pid)
    return next((n for n, needle in COMPONENTS if needle in line), "other")


def pss_by_component(pids: Sequence[int]) -> dict[str, float]:
    """PSS in MiB per Ray component (``component``)."""
    found: dict[str, float] = {}
    for pid in pids:
        name = component(pid)
        found[name] = found.get(name, 0.0) + pss_kib([pid]) / 1024
    return dict(sorted(found.items(), key=lambda item: -item[1]))
