"""Fixtures: one stand-in, started with scripts/kube-standin, and the official client against it.

See kst_helpers.py for how these tests must be run (root, inside the local site's login namespace).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from kst_helpers import (
    HOSTS,
    IP_BASE,
    PORT,
    PREFIX,
    Standin,
    gone,
    in_login_namespace,
    launcher,
    wait_for,
)
from kubernetes import client, config


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    if os.geteuid() != 0 or not in_login_namespace():
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
