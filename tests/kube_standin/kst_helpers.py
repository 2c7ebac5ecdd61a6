"""Helpers and constants of the stand-in tests (fixtures are in conftest.py).

A module of its own, not conftest.py, so that ``from kst_helpers import ...`` stays unambiguous
when these tests run in one pytest session with tests/e2e (which has its own conftest).

These tests need root and the local SLURM site's login namespace, and must run inside it:
``scripts/localsite up`` then ``scripts/localsite login .venv/bin/pytest tests/kube_standin``.
The stand-in they start is their own (state dir in a temp dir, port 16444, cloud hosts
``rsl-kt1..3`` at 10.77.0.121-123), so it never collides with a stand-in started by hand or by
the end-to-end tests (``rsl-c*`` at 10.77.0.101+, port 16443).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from support import procs

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "kube-standin"
LOGIN_NS = Path("/run/netns/rsl-login")
PORT = 16444
HOSTS = 3
PREFIX = "rsl-kt"
IP_BASE = 120
IMAGE = "rayproject/ray:2.60.0"  # the venv's Ray version: maps to .venv


def in_login_namespace() -> bool:
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
    """The harness's wait (support.procs), polling faster: the stand-in answers in milliseconds."""
    return procs.wait_for(predicate, timeout, what, interval)


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
