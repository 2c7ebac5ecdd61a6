"""End-to-end fixtures: real `ray up`/`ray down` on the real local SLURM site.

These tests run on the site's login node (``scripts/localsite login pytest tests/e2e``, which
`make test` does): SLURM_CONF points at the site and the project's venv is on PATH.
Every cluster a test starts is torn down by the fixture, and the fixture fails the test if any
SLURM job of that cluster is left over.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_slurm.jobscript import parse_job_name
from ray_slurm.slurm import Job, JobState, Slurm

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ray-slurm.yaml"
BIN = Path(sys.executable).parent
log = logging.getLogger("e2e")

# Test setting, like the short idle timeout below: the autoscaler loops every 2 s instead of
# Ray's 5 s. Every head (login process or SLURM job) inherits it from `ray up`'s environment.
# The molecule scenarios and `make bench` run with Ray's default.
os.environ["AUTOSCALER_UPDATE_INTERVAL_S"] = "2"


def run(
    args: list[str], timeout: float, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, log its output, fail with that output if it fails."""
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    log.info(
        "$ %s -> %s\n%s%s",
        " ".join(args),
        proc.returncode,
        proc.stdout[-4000:],
        proc.stderr[-4000:],
    )
    if check and proc.returncode != 0:
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}:\n{output}")
    return proc


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def site_nodes() -> dict[str, str]:
    """SLURM node name -> NodeAddr of the running local site."""
    nodes = {n.name: n.addr for n in Slurm().nodes().values()}
    assert nodes, "the local SLURM site has no nodes: run `scripts/localsite up`"
    return nodes


class Cluster:
    """One Ray cluster launched from a copy of the example config, as a user would."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        head_mode: str,
        max_workers: int,
        node_map: str = "",
        change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.name = name
        cfg = yaml.safe_load(EXAMPLE.read_text())
        cfg["cluster_name"] = name
        cfg["idle_timeout_minutes"] = 0.25  # test setting: idle workers go after 15 s
        cfg["provider"]["head_mode"] = head_mode
        cfg["provider"]["state_dir"] = str(workdir / "state")
        cfg["available_node_types"]["cpu"]["max_workers"] = max_workers
        if node_map:
            cfg["provider"]["node_map"] = node_map
        if head_mode == "slurm":
            # The head is a job of its own: one CPU, so tasks needing 2 CPUs go to workers.
            cfg["available_node_types"]["head"] = {
                "resources": {"CPU": 1},
                "node_config": {
                    "partition": "debug",
                    "cpus": 1,
                    "memory": "1500M",
                    "time": "00:30:00",
                },
                "max_workers": 0,
            }
        if change:
            change(cfg)
        self.state_dir = workdir / "state" / name
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.is_up = False

    def ray(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "ray"), *args], timeout=timeout, check=check)

    def up(self) -> None:
        self.is_up = True
        self.ray("up", "-y", "--no-config-cache", str(self.config_path), timeout=420)

    def down(self) -> None:
        self.ray("down", "-y", str(self.config_path), timeout=300)
        self.is_up = False

    def env(self) -> dict[str, str]:
        """The driver environment `ray-slurm env` prints (what the README tells users)."""
        out = run([str(BIN / "ray-slurm"), "env", str(self.config_path)], timeout=30).stdout
        env = dict(os.environ)
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
        return env

    def head(self) -> dict[str, Any]:
        """The head's address record (head.json), as the head published it."""
        return json.loads((self.state_dir / "head.json").read_text())

    def autoscaler_log(self) -> str:
        path = Path(self.head()["autoscaler_log"])
        return path.read_text() if path.exists() else ""

    def status(self) -> str:
        return run([str(BIN / "ray-slurm"), "status", str(self.config_path)], timeout=60).stdout

    def jobs(self, kind: str | None = None) -> list[Job]:
        """This cluster's SLURM jobs that still exist, found from SLURM alone."""
        found = []
        for job in Slurm().squeue():
            owner = parse_job_name(job.name, self.name)
            if owner and job.state is not JobState.GONE and kind in (None, owner[0]):
                found.append(job)
        return found

    def driver(self, code: str, timeout: float = 300, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run(
            [sys.executable, "-c", code],
            timeout=timeout,
            check=check,
            env=env or self.env(),
        )

    def exec(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.ray("exec", str(self.config_path), command, timeout=timeout)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def factory(name: str, head_mode: str = "login", max_workers: int = 2, **kw: Any) -> Cluster:
        cluster = Cluster(name, tmp_path, head_mode, max_workers, **kw)
        clusters.append(cluster)
        return cluster

    yield factory

    leftovers = []
    for cluster in clusters:
        if cluster.is_up:
            cluster.ray("down", "-y", str(cluster.config_path), timeout=300, check=False)
        jobs = cluster.jobs()
        if jobs:
            leftovers.append((cluster.name, jobs))
            Slurm().scancel([j.job_id for j in jobs])
    assert not leftovers, f"orphan SLURM jobs after ray down: {leftovers}"


WHERE = """
import json, socket, time, ray
ray.init()
@ray.remote(num_cpus=2)
def where(seconds):
    time.sleep(seconds)
    return socket.gethostname(), ray.util.get_node_ip_address()
print("RESULT " + json.dumps(ray.get([where.remote({seconds}) for _ in range({tasks})])))
"""


def where_tasks(tasks: int, seconds: float) -> str:
    """A driver that runs `tasks` 2-CPU tasks and prints where each ran."""
    return WHERE.format(tasks=tasks, seconds=seconds)


def start_driver(
    cluster: Cluster, tasks: int, seconds: float, on_head: bool = False
) -> subprocess.Popen[str]:
    """A driver in the background whose tasks need workers (2 CPUs each).

    By default it runs here on the login node with `ray-slurm env`'s environment; `on_head`
    runs it on the head through `ray exec` (inside the head's job in head_mode slurm).
    """
    code = where_tasks(tasks=tasks, seconds=seconds)
    if on_head:
        script = cluster.config_path.with_suffix(".driver.py")
        script.write_text(code)
        command = [str(BIN / "ray"), "exec", str(cluster.config_path), f"{sys.executable} {script}"]
        env = None
    else:
        command, env = [sys.executable, "-c", code], cluster.env()
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def scontrol(*args: str) -> None:
    run(["scontrol", *args], timeout=30)


def parse_result(stdout: str) -> list[tuple[str, str]]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    return [tuple(x) for x in json.loads(line.removeprefix("RESULT "))]
