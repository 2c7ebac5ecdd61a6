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

import copy
import json
import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.accounts import SITE_CONFIG, SiteNotDeployed, User, site_ray_env
from support.cluster import EXAMPLE, REPO, SLURM_HEAD_TYPE, Cluster, example_config
from support.drivers import parse_result, where_tasks
from support.jobs import cluster_jobs
from support.procs import run, wait_for

from ray_slurm.backends.slurm.client import Slurm

__all__ = [
    "ALICE", "BOB", "CLUSTER", "EVE", "EXAMPLE", "REPO", "SITE_CONFIG", "Cluster", "SiteCluster",
    "User", "gcs_open", "mode", "parse_result", "run", "scontrol", "site_ray_env", "start_driver",
    "wait_for", "where_tasks",
]  # fmt: skip

# Test setting, like the short idle timeout below: the autoscaler loops every 2 s instead of
# Ray's 5 s. Every head (login process or SLURM job) inherits it from `ray up`'s environment.
# The molecule scenarios and `make bench` run with Ray's default.
TEST_ENV = {"AUTOSCALER_UPDATE_INTERVAL_S": "2"}

ALICE, BOB, EVE = (User(name, TEST_ENV) for name in ("rsl-alice", "rsl-bob", "rsl-eve"))


@pytest.fixture(scope="session", autouse=True)
def _fresh_users() -> None:
    """Each session starts like fresh login and compute nodes: no Ray temp files of the test
    users, and none at the shared names Ray would use without the provider's private temp root.

    The nodes' temp dirs (``/tmp/rs-<job id>.*``) of an earlier site session go too: job ids
    start again at 1 with each site, and a test that checks that a job's temp dir went with it
    must not find one an earlier session's job of the same id left (a fault test's killed node).
    """
    try:
        site_ray_env()
    except SiteNotDeployed as e:
        pytest.exit(str(e), 2)
    uids = {user.uid for user in (ALICE, BOB, EVE)}
    for node_dir in Path("/tmp").glob("rs-*"):
        if node_dir.lstat().st_uid not in uids:
            continue
        if node_dir.is_dir() and not node_dir.is_symlink():
            shutil.rmtree(node_dir, ignore_errors=True)
        else:
            node_dir.unlink()  # a neighbour's planted file or symlink
    for uid in uids:
        shutil.rmtree(f"/tmp/ray-slurm-{uid}", ignore_errors=True)
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


def e2e_config(
    name: str,
    workdir: Path,
    head_mode: str,
    max_workers: int,
    node_map: str = "",
    change: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The example config with the tests' settings: short idle timeout, the head mode asked."""
    cfg = example_config(name, workdir / "state")
    cfg["idle_timeout_minutes"] = 0.25  # test setting: idle workers go after 15 s
    cfg["provider"]["head_mode"] = head_mode
    cfg["available_node_types"]["cpu"]["max_workers"] = max_workers
    if node_map:
        cfg["provider"]["node_map"] = node_map
    if head_mode == "slurm":
        cfg["available_node_types"]["head"] = copy.deepcopy(SLURM_HEAD_TYPE)
    if change:
        change(cfg)
    return cfg


@pytest.fixture
def make_cluster(workdir: Path) -> Iterator[Callable[..., Cluster]]:
    """Clusters of a test (alice's unless ``user=``); each is torn down after the test, which
    fails if any SLURM job of theirs is left over."""
    clusters: list[Cluster] = []

    def factory(name: str, head_mode: str = "login", max_workers: int = 2, user: User = ALICE,
                **kw: Any) -> Cluster:  # fmt: skip
        where = workdir if user is ALICE else user.mkdir(user.home / "e2e" / workdir.name)
        cluster = Cluster(name, where, user, e2e_config(name, where, head_mode, max_workers, **kw))
        clusters.append(cluster)
        return cluster

    yield factory

    leftovers = [(c.name, left) for c in clusters if (left := c.cleanup())]
    assert not leftovers, f"orphan SLURM jobs after ray down: {leftovers}"


def start_driver(
    cluster: Cluster, tasks: int, seconds: float, on_head: bool = False, cpus: int = 2
) -> subprocess.Popen[str]:
    """A driver of the cluster's user in the background whose tasks need workers (``cpus``
    CPUs each: 2, a whole worker of the site's types).

    By default it runs here on the login node with `ray-slurm env`'s environment; `on_head`
    runs it on the head through `ray exec` (inside the head's job in head_mode slurm).
    """
    code = where_tasks(tasks=tasks, seconds=seconds, cpus=cpus)
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


# A user's copy of the site's config, as the README tells users to run it.
CLUSTER = yaml.safe_load(SITE_CONFIG.read_text())["cluster_name"]  # the same for everyone


class SiteCluster:
    """A user's copy of the site's ray-slurm.yaml, unchanged, in their home; README commands."""

    def __init__(self, user: User, env: dict[str, str] | None = None, umask: str = "",
                 head_mode: str = "login") -> None:  # fmt: skip
        self.user = user
        self.extra_env = env or {}
        self.umask = umask
        self.config = user.home / "ray-slurm.yaml"
        text = SITE_CONFIG.read_text()
        if head_mode == "slurm":  # the one change a user makes for a head in a job of its own
            cfg = yaml.safe_load(text)
            cfg["provider"]["head_mode"] = "slurm"
            cfg["available_node_types"]["head"] = copy.deepcopy(SLURM_HEAD_TYPE)
            text = yaml.safe_dump(cfg)
        user.write(self.config, text)
        self.state = user.home / ".ray-slurm" / CLUSTER
        shutil.rmtree(self.state, ignore_errors=True)  # a user who never ran this cluster

    def sh(self, command: str, timeout: float = 420, check: bool = True):
        """A command in the user's login shell (with their umask and environment)."""
        prefix = f"umask {self.umask}; " if self.umask else ""
        return self.user.run(["bash", "-c", prefix + command], timeout=timeout, check=check,
                             env=self.user.environ(self.extra_env))  # fmt: skip

    def up(self, check: bool = True, cwd: str = ""):
        """`ray up`, typed in the user's home or in ``cwd``."""
        where = f"cd {cwd} && " if cwd else ""
        return self.sh(f"{where}ray up -y {self.config}", check=check)

    def down(self):
        return self.sh("ray down -y ray-slurm.yaml", timeout=300)

    def driver(self, tasks: int = 1, seconds: float = 1, check: bool = True):
        code = where_tasks(tasks=tasks, seconds=seconds)
        script = self.user.write(self.user.home / "where.py", code)
        return self.sh(f'eval "$(ray-slurm env ray-slurm.yaml)" && python {script}', check=check)

    def env(self) -> dict[str, str]:
        """The environment `ray-slurm env` gives the user (as `eval` in their shell would)."""
        out = self.sh("ray-slurm env ray-slurm.yaml").stdout
        env = self.user.environ(self.extra_env)
        for line in out.splitlines():
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").partition("=")
                env[key] = value.strip("'")
        return env

    def jobs(self, kind: str | None = None):
        return cluster_jobs(self.user.jobs(), CLUSTER, kind)

    def head(self) -> dict:
        return json.loads((self.state / "head.json").read_text())


@pytest.fixture
def site_cluster():
    made: list[SiteCluster] = []

    def make(user: User, **kw) -> SiteCluster:
        made.append(SiteCluster(user, **kw))
        return made[-1]

    yield make
    for c in made:
        c.sh("ray down -y ray-slurm.yaml", timeout=300, check=False)
    left = {c.user.name: c.jobs() for c in made if c.jobs()}
    for jobs in left.values():
        run(["scancel", *(j.job_id for j in jobs)], timeout=30)
    assert not left, f"orphan SLURM jobs after ray down: {left}"


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)
