"""End-to-end fixtures: real `ray up`/`ray down` on the real local SLURM site, as its users.

These tests run on the site's login node (``scripts/localsite login pytest tests/e2e``, which
`make test` does) after ``scripts/localsite deploy`` has deployed the site as its sysadmin would.
pytest itself runs as root — the harness: it reads SLURM and the users' files, kills processes,
breaks SLURM on purpose — but every `ray`/`ray-slurm` command and every driver runs as one of the
site's unprivileged users (``rsl-alice``, ``rsl-bob``; ``rsl-eve`` is the hostile neighbour),
with a plain user's environment and the site's Ray environment on PATH.
Every cluster a test starts is torn down by the fixture, and the fixture fails the test if any
SLURM job of that cluster is left over.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_slurm.backends.jobscript import parse_job_name
from ray_slurm.nodes import JobState
from ray_slurm.slurm import Job, Slurm

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ray-slurm.yaml"
SITE_STATE = Path("/var/tmp/rayhpc-localsite")
SITE_CONFIG = SITE_STATE / "shared" / "ray-slurm.yaml"  # what the site's playbook rendered
log = logging.getLogger("e2e")

# Test setting, like the short idle timeout below: the autoscaler loops every 2 s instead of
# Ray's 5 s. Every head (login process or SLURM job) inherits it from `ray up`'s environment.
# The molecule scenarios and `make bench` run with Ray's default.
TEST_ENV = {"AUTOSCALER_UPDATE_INTERVAL_S": "2"}


def run(
    args: list[str], timeout: float, check: bool = True, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, log its output, fail with that output if it fails."""
    started = time.monotonic()
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    log.info(
        "$ %s -> %s (%.1f s)\n%s%s",
        " ".join(args),
        proc.returncode,
        time.monotonic() - started,
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


def site_ray_env() -> Path:
    """The Ray environment the site's sysadmin deployed (the one users' PATH has)."""
    if not SITE_CONFIG.exists():
        pytest.exit(f"{SITE_CONFIG} is missing: run `scripts/localsite deploy` first", 2)
    return Path(yaml.safe_load(SITE_CONFIG.read_text())["provider"]["ray_env"])


@dataclass(frozen=True)
class User:
    """One of the site's unprivileged accounts; commands run as it, in a plain environment."""

    name: str

    @property
    def home(self) -> Path:
        return Path("/home") / self.name

    @property
    def uid(self) -> int:
        return int(subprocess.check_output(["id", "-u", self.name], text=True))

    def bin(self, command: str) -> str:
        return str(site_ray_env() / "bin" / command)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "SHELL": "/bin/bash",
            "LANG": "C.UTF-8", "SLURM_CONF": os.environ["SLURM_CONF"],
            "PATH": f"{site_ray_env() / 'bin'}:/usr/bin:/bin", **TEST_ENV, **(extra or {}),
        }  # fmt: skip

    def argv(self, args: list[str], env: dict[str, str] | None = None) -> list[str]:
        """``runuser`` with exactly ``env`` (default: the user's plain environment)."""
        env = self.environ() if env is None else env
        return ["runuser", "-u", self.name, "--", "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), *args]  # fmt: skip

    def run(
        self, args: list[str], timeout: float = 300, check: bool = True,
        env: dict[str, str] | None = None, **kw: Any,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run(self.argv(args, env), timeout=timeout, check=check, cwd=self.home, **kw)

    def popen(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(args, env), cwd=self.home, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    def write(self, path: Path, text: str, mode: int = 0o644) -> Path:
        """A file of the user's (written by the harness, owned by the user)."""
        path.write_text(text)
        os.chown(path, self.uid, self.uid)
        os.chmod(path, mode)
        return path

    def mkdir(self, path: Path) -> Path:
        """A fresh directory of the user's, everything missing above it inside the home too."""
        if path.exists():
            shutil.rmtree(path)
        made = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, mode=0o755)
        for p in made:
            os.chown(p, self.uid, self.uid)
        return path

    def jobs(self) -> list[Job]:
        return Slurm().squeue(user=self.name)


ALICE, BOB, EVE = User("rsl-alice"), User("rsl-bob"), User("rsl-eve")


@pytest.fixture(scope="session", autouse=True)
def _fresh_users() -> None:
    """Each session starts like a fresh login node: no Ray temp files of the test users, and
    none at the shared names Ray would use without the provider's private temp root."""
    for user in (ALICE, BOB, EVE):
        shutil.rmtree(f"/tmp/ray-slurm-{user.uid}", ignore_errors=True)
    shutil.rmtree("/tmp/ray", ignore_errors=True)
    for stale in Path("/tmp").glob("ray-config-*"):
        stale.unlink()


@pytest.fixture(scope="session")
def site_nodes() -> dict[str, str]:
    """SLURM node name -> NodeAddr of the running local site."""
    nodes = {n.name: n.addr for n in Slurm().nodes().values()}
    assert nodes, "the local SLURM site has no nodes: run `scripts/localsite up`"
    return nodes


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Path:
    """A fresh directory in alice's home (homes are on the filesystem every node shares)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:80]
    return ALICE.mkdir(ALICE.home / "e2e" / name)


class Cluster:
    """One Ray cluster a user launches from a copy of the example config."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        head_mode: str,
        max_workers: int,
        node_map: str = "",
        change: Callable[[dict[str, Any]], None] | None = None,
        user: User = ALICE,
    ) -> None:
        self.name = name
        self.user = user
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
        self.config_path = user.write(workdir / f"{name}.yaml", yaml.safe_dump(cfg))
        self.is_up = False

    def ray(self, *args: str, timeout: float = 300, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return self.user.run([self.user.bin("ray"), *args], timeout=timeout, check=check, **kw)

    def up(self) -> None:
        """`ray up` exactly as the README says (the launcher's config cache included)."""
        self.is_up = True
        self.ray("up", "-y", str(self.config_path), timeout=420)

    def down(self) -> None:
        self.ray("down", "-y", str(self.config_path), timeout=300)
        self.is_up = False

    def env(self) -> dict[str, str]:
        """The driver environment `ray-slurm env` prints (what the README tells users)."""
        out = self.user.run([self.user.bin("ray-slurm"), "env", str(self.config_path)],
                            timeout=30).stdout  # fmt: skip
        env = self.user.environ()
        for line in out.splitlines():
            if line.startswith("export "):
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
        return self.user.run([self.user.bin("ray-slurm"), "status", str(self.config_path)],
                             timeout=60).stdout  # fmt: skip

    def jobs(self, kind: str | None = None) -> list[Job]:
        """This cluster's SLURM jobs that still exist, found from SLURM alone."""
        found = []
        for job in self.user.jobs():
            owner = parse_job_name(job.name, self.name)
            if owner and job.state is not JobState.GONE and kind in (None, owner[0]):
                found.append(job)
        return found

    def driver(self, code: str, timeout: float = 300, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return self.user.run([self.user.bin("python"), "-c", code], timeout=timeout, check=check,
                             env=env or self.env())  # fmt: skip

    def exec(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.ray("exec", str(self.config_path), command, timeout=timeout)


@pytest.fixture
def make_cluster(workdir: Path) -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def factory(name: str, head_mode: str = "login", max_workers: int = 2, **kw: Any) -> Cluster:
        user = kw.get("user", ALICE)
        where = workdir if user is ALICE else user.mkdir(user.home / "e2e" / workdir.name)
        cluster = Cluster(name, where, head_mode, max_workers, **kw)
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
    """A driver of the cluster's user in the background whose tasks need workers (2 CPUs each).

    By default it runs here on the login node with `ray-slurm env`'s environment; `on_head`
    runs it on the head through `ray exec` (inside the head's job in head_mode slurm).
    """
    code = where_tasks(tasks=tasks, seconds=seconds)
    user = cluster.user
    if on_head:
        script = user.write(cluster.config_path.with_suffix(".driver.py"), code)
        command = [user.bin("ray"), "exec", str(cluster.config_path), f"python {script}"]
        return user.popen(command)
    return user.popen([user.bin("python"), "-c", code], env=cluster.env())


def gcs_open(ip: str, port: int) -> bool:
    """Whether something listens at ip:port (a head's GCS, dashboard)."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((ip, port)) == 0


def scontrol(*args: str) -> None:
    run(["scontrol", *args], timeout=30)


def parse_result(stdout: str) -> list[tuple[str, str]]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    return [tuple(x) for x in json.loads(line.removeprefix("RESULT "))]
