"""What the benchmarks share: commands, SLURM polling, a benchmark cluster, PSS, medians.

Everything here runs on the local site's login node (``scripts/localsite login``), as a user
would: real SLURM, real ``ray up``/``ray down``, nothing faked.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from ray_slurm.backends.jobscript import parse_job_name
from ray_slurm.nodes import JobState
from ray_slurm.slurm import Job, Slurm

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ray-slurm.yaml"
BIN = Path(sys.executable).parent


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: Sequence[str], timeout: float = 300, check: bool = True, **kwargs: Any) -> str:
    """Run a command; on failure raise with its output (the benchmark row reports it)."""
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and proc.returncode != 0:
        tail = (proc.stdout[-1500:] + proc.stderr[-1500:]).strip()
        raise RuntimeError(f"{' '.join(args[:3])} ... exited {proc.returncode}: {tail}")
    return proc.stdout


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def job_state(job_id: str) -> str:
    """squeue's state of one job ("" once squeue no longer shows it)."""
    out = run(
        ["squeue", "--noheader", f"--jobs={job_id}", "--states=all", "--format=%T"], check=False
    )
    return out.strip().splitlines()[0].strip() if out.strip() else ""


def wait_running(job_id: str, timeout: float = 60, interval: float = 0.02) -> float:
    """Poll squeue until the job runs; returns time.time() of the first RUNNING answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state == "RUNNING":
            return time.time()
        if state in ("FAILED", "CANCELLED", "COMPLETED", "TIMEOUT", "NODE_FAIL"):
            raise RuntimeError(f"job {job_id} ended ({state}) before it ran")
        time.sleep(interval)
    raise TimeoutError(f"job {job_id} not RUNNING after {timeout:.0f} s")


def site_info() -> dict[str, Any]:
    """The machine and the site, for the results file."""
    config = run(["scontrol", "show", "config"], check=False)
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
        "python": sys.version.split()[0],
        "slurm": limits.pop("SLURM_VERSION", "?"),
        "slurm_limits": limits,
        "site_nodes": len(nodes),
    }


# ----------------------------------------------------------------------------- a cluster


class BenchCluster:
    """A login-mode cluster from a copy of the example: 1-CPU workers, private state."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        max_workers: int,
        idle_minutes: float,
        cpus: int = 1,
        memory: str = "1000M",
    ) -> None:
        self.name = name
        cfg = yaml.safe_load(EXAMPLE.read_text())
        cfg["cluster_name"] = name
        cfg["idle_timeout_minutes"] = idle_minutes
        cfg["max_workers"] = max_workers
        cfg["provider"]["state_dir"] = str(workdir / "state")
        cpu = cfg["available_node_types"]["cpu"]
        cpu["node_config"].update(cpus=cpus, memory=memory)
        cpu["max_workers"] = max_workers
        self.config = cfg
        self.state_dir = workdir / "state" / name
        self.path = workdir / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(cfg))
        self.is_up = False
        self.up_s = 0.0

    def up(self) -> float:
        """`ray up`; returns its wall time."""
        t0 = time.monotonic()
        self.is_up = True
        run([str(BIN / "ray"), "up", "-y", "--no-config-cache", str(self.path)], timeout=420)
        self.up_s = time.monotonic() - t0
        return self.up_s

    def down(self, env: dict[str, str] | None = None) -> float:
        t0 = time.monotonic()
        run([str(BIN / "ray"), "down", "-y", str(self.path)], timeout=300, env=env)
        self.is_up = False
        return time.monotonic() - t0

    def env(self) -> dict[str, str]:
        """The driver environment, as `ray-slurm env` prints it for users."""
        out = run([str(BIN / "ray-slurm"), "env", str(self.path)], timeout=60)
        env = dict(os.environ)
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
        return env

    def head(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "head.json").read_text())

    def login_head_pid(self) -> int:
        state = json.loads((self.state_dir / "state.json").read_text())
        return int(state["login_head"]["pid"])

    def jobs(self, kind: str | None = None) -> list[Job]:
        found = []
        for job in Slurm().squeue():
            owner = parse_job_name(job.name, self.name)
            if owner and job.state is not JobState.GONE and kind in (None, owner[0]):
                found.append(job)
        return found

    def cleanup(self) -> None:
        """After a failure: ray down, and cancel whatever job of the cluster is left."""
        if self.is_up:
            run([str(BIN / "ray"), "down", "-y", str(self.path)], timeout=300, check=False)
            self.is_up = False
        left = [j.job_id for j in self.jobs()]
        if left:
            Slurm().scancel(left)


def driver(cluster: BenchCluster, code: str, timeout: float = 600) -> dict[str, Any]:
    """Run a driver script on the login node; it prints one JSON line starting with RESULT."""
    out = run([sys.executable, "-c", code], timeout=timeout, env=cluster.env())
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


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
