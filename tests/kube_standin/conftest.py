"""Fixtures: one stand-in, started with scripts/kube-standin, and the official client against it.

These tests need root and the local SLURM site's login namespace, and must run inside it:
``scripts/localsite up`` then ``scripts/localsite login .venv/bin/pytest tests/kube_standin``.
The stand-in they start is their own (state dir in a temp dir, port 16444, cloud hosts
``rsl-kt1..3`` at 10.77.0.121-123), so it never collides with a stand-in started by hand or by
the end-to-end tests (``rsl-c*`` at 10.77.0.101+, port 16443).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "kube-standin"
LOGIN_NS = Path("/run/netns/rsl-login")
PORT = 16444
HOSTS = 3
PREFIX = "rsl-kt"
IP_BASE = 120
IMAGE = "rayproject/ray:2.60.0"  # the venv's Ray version: maps to .venv


def _in_login_namespace() -> bool:
    try:
        mine, login = os.stat("/proc/self/ns/net"), os.stat(LOGIN_NS)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (login.st_dev, login.st_ino)


def launcher(*args: str, state_dir: Path, port: int = PORT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LAUNCHER), *args, "--state-dir", str(state_dir), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Standin:
    state_dir: Path
    kubeconfig: Path
    url: str
    token: str

    def host_ip(self, node: str) -> str:
        return f"10.77.0.{IP_BASE + int(node.removeprefix(PREFIX))}"


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    if os.geteuid() != 0 or not _in_login_namespace():
        pytest.skip(
            "needs root inside the local site: scripts/localsite login .venv/bin/pytest ..."
        )
    state = tmp_path_factory.mktemp("kube")
    up = launcher(
        "up", "--hosts", str(HOSTS), "--host-prefix", PREFIX, "--ip-base", str(IP_BASE),
        "--start-delay", "0.5", "--namespace", "default", "--namespace", "team",
        state_dir=state,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    kubeconfig = state / "kubeconfig"
    assert f"KUBECONFIG={kubeconfig}" in up.stdout
    token = (state / "token").read_text().strip()
    yield Standin(state, kubeconfig, f"http://10.77.0.1:{PORT}", token)
    down = launcher("down", state_dir=state)
    assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="session")
def v1(standin: Standin) -> client.CoreV1Api:
    """The official client, configured only through the kubeconfig the launcher wrote."""
    return client.CoreV1Api(config.new_client_from_config(config_file=str(standin.kubeconfig)))


@pytest.fixture
def ns(v1: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, deleted (with its pods) afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    v1.delete_namespace(name)
    wait_for(lambda: gone(lambda: v1.read_namespace(name)), 20, f"namespace {name} deleted")


def gone(read: Callable[[], Any]) -> bool:
    """True once ``read()`` answers 404."""
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def pod(
    name: str,
    command: list[str],
    image: str = IMAGE,
    labels: dict[str, str] | None = None,
    restart_policy: str = "Never",
    **spec: Any,
) -> client.V1Pod:
    container = spec.pop("container", {})
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            restart_policy=restart_policy,
            containers=[client.V1Container(name="main", image=image, command=command, **container)],
            **spec,
        ),
    )


def wait_phase(
    v1: client.CoreV1Api, ns: str, name: str, phases: set[str], timeout: float = 15
) -> Any:
    def check() -> Any:
        current = v1.read_namespaced_pod(name, ns)
        return current if current.status.phase in phases else None

    return wait_for(check, timeout, f"pod {ns}/{name} in {phases}")


def netns_pids(node: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True, check=True)
    return {int(p) for p in out.stdout.split()}
