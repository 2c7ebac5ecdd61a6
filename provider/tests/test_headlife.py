"""A head's life as clients see it (ray_slurm.headlife): published, holding its ports, gone.

The tests run as root; "another account" is a listener started as nobody (65534).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from ray_slurm import headlife
from ray_slurm.cli import main
from ray_slurm.net import listeners
from ray_slurm.state import ClusterDir

NOBODY = 65534
TEMP_DIR = "/tmp/rs-h1.abc/r"


@pytest.fixture
def cluster(tmp_path):
    return ClusterDir(tmp_path / "state", "demo").create()


def listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def publish(cluster: ClusterDir, *ports: int) -> None:
    gcs, dashboard, client = ports
    record = {"ip": "127.0.0.1", "gcs_port": gcs, "dashboard_port": dashboard,
              "client_port": client, "temp_dir": TEMP_DIR, "node_id": "login-head"}  # fmt: skip
    cluster.publish_head(record)


def test_listeners_name_the_uid_of_each_listening_socket():
    with listening() as s:
        port = s.getsockname()[1]
        assert listeners([port]) == {port: {os.geteuid()}}
    assert listeners([port]) == {port: set()}


def test_the_head_is_marked_once_ray_holds_every_published_port(cluster):
    socks = [listening() for _ in range(3)]
    try:
        publish(cluster, *(s.getsockname()[1] for s in socks))
        assert cluster.head().ports_held is False  # published, not yet for clients
        assert headlife.hold_ports(cluster, TEMP_DIR, os.getpid(), timeout_s=5)
        assert cluster.head().ports_held is True
    finally:
        for s in socks:
            s.close()


def test_a_port_another_account_holds_fails_the_head_naming_port_and_uid(cluster, capsys):
    """Eve took the dashboard port before Ray could: no client is ever sent there, and `ray up`
    (in `wait-head`) says why at once instead of waiting for a head that cannot serve."""
    code = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(30)")  # fmt: skip
    # the system's Python: the tools' venv lies in root's home, which nobody may enter
    eve = subprocess.Popen(["/usr/bin/python3", "-c", code], user=NOBODY, stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    ours = [listening(), listening()]
    try:
        taken = int(eve.stdout.readline())
        publish(cluster, ours[0].getsockname()[1], taken, ours[1].getsockname()[1])
        assert not headlife.hold_ports(cluster, TEMP_DIR, os.getpid(), timeout_s=5)
    finally:
        eve.kill()
        for s in ours:
            s.close()
    assert cluster.read_head() is None  # no client is sent to it
    why = cluster.head_failure()
    assert f"dashboard port {taken} is held by another account (uid {NOBODY})" in why
    assert main(["wait-head", "--cluster-dir", str(cluster.root), "--timeout", "5"]) == 1


def test_a_ray_that_stopped_before_holding_its_ports_fails_the_head(cluster):
    dead = subprocess.Popen(["true"])
    dead.wait()
    with listening() as s:
        port = s.getsockname()[1]
    publish(cluster, port, port, port)
    t0 = time.monotonic()
    assert not headlife.hold_ports(cluster, TEMP_DIR, dead.pid, timeout_s=30)
    assert time.monotonic() - t0 < 5  # at once, not after the timeout
    assert "Ray stopped before it held the head's ports" in cluster.head_failure()


def test_a_newer_heads_record_is_not_marked(cluster):
    with listening() as s:
        port = s.getsockname()[1]
        publish(cluster, port, port, port)
        assert not headlife.hold_ports(cluster, "/tmp/rs-h0.old/r", os.getpid(), timeout_s=1)
    assert cluster.read_head() is not None and cluster.head_failure() is None
