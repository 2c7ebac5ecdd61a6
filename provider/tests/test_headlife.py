"""A head's life as clients see it (ray_slurm.cli.headlife): published, holding its ports, gone.

The tests run as root; "another account" is a listener started as nobody (65534).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from ray_slurm.backends.nodes import PORTS_TAKEN_EXIT
from ray_slurm.cli import headlife
from ray_slurm.cli.main import main
from ray_slurm.host.net import listeners
from ray_slurm.host.state import ClusterDir

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
        assert headlife.hold_ports(cluster, TEMP_DIR, os.getpid(), timeout_s=5).held
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
        assert headlife.hold_ports(cluster, TEMP_DIR, os.getpid(), timeout_s=5).taken
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
    assert not headlife.hold_ports(cluster, TEMP_DIR, dead.pid, timeout_s=30).held
    assert time.monotonic() - t0 < 5  # at once, not after the timeout
    assert "Ray stopped before it held the head's ports" in cluster.head_failure()


def nobodys_listener() -> tuple[subprocess.Popen[str], int]:
    """A port another account (nobody) listens on, as a neighbour's sniper would."""
    code = ("import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(30)")  # fmt: skip
    eve = subprocess.Popen(["/usr/bin/python3", "-c", code], user=NOBODY, stdout=subprocess.PIPE,
                           text=True)  # fmt: skip
    return eve, int(eve.stdout.readline())


def test_an_agent_port_another_account_holds_fails_the_head(cluster):
    """Ray keeps a head whose dashboard agent lost its HTTP port to another account running
    ("the HTTP service will be disabled"), and its dashboard sends job submissions, token
    included, to that port: the head is not handed to clients, and fails naming it."""
    eve, taken = nobodys_listener()
    ours = [listening() for _ in range(5)]
    try:
        publish(cluster, *(s.getsockname()[1] for s in ours[:3]))
        agents = [taken, *(s.getsockname()[1] for s in ours[3:])]
        check = headlife.hold_ports(cluster, TEMP_DIR, os.getpid(), 5, agents)
    finally:
        eve.kill()
        for s in ours:
            s.close()
    assert check.taken and not check.held
    assert cluster.read_head() is None
    assert f"head's dashboard agent port {taken} is held by another account (uid {NOBODY})" in (
        cluster.head_failure())  # fmt: skip


def test_a_workers_port_another_account_holds_ends_it_with_its_own_exit(caplog):
    eve, taken = nobodys_listener()
    ours = [listening() for _ in range(2)]
    try:
        agents = [ours[0].getsockname()[1], ours[1].getsockname()[1], taken]
        check = headlife.hold_node_ports(agents, os.getpid(), 5)
        code = main(["hold-ports", "/nonexistent", "--ray-pid", str(os.getpid()), "--timeout",
                     "5", "--agent-ports", *map(str, agents)])  # fmt: skip
    finally:
        eve.kill()
        for s in ours:
            s.close()
    assert check.taken and code == PORTS_TAKEN_EXIT
    assert (
        f"the node's runtime env agent port {taken} is held by another account (uid "
        f"{NOBODY}); this node's job ends, the next one picks other ports" in caplog.text
    )


def test_a_worker_whose_ray_is_slow_to_listen_goes_on(caplog):
    """Nobody else holds the ports, Ray (alive) has not bound them yet (slow, or installed
    without its dashboard agent): the worker is not killed for it."""
    with listening() as s:
        free = s.getsockname()[1]
    check = headlife.hold_node_ports([free, free, free], os.getpid(), 0.3)
    assert check.held
    assert "Ray did not listen on the node's ports within 0.3 s: going on" in caplog.text


def test_a_workers_ray_that_stopped_fails_the_check():
    dead = subprocess.Popen(["true"])
    dead.wait()
    with listening() as s:
        free = s.getsockname()[1]
    check = headlife.hold_node_ports([free, free, free], dead.pid, 5)
    assert not check.held and not check.taken


def test_a_newer_heads_record_is_not_marked(cluster):
    with listening() as s:
        port = s.getsockname()[1]
        publish(cluster, port, port, port)
        assert not headlife.hold_ports(cluster, "/tmp/rs-h0.old/r", os.getpid(), timeout_s=1).held
    assert cluster.read_head() is not None and cluster.head_failure() is None


def test_an_opened_metrics_port_another_account_holds_is_named():
    eve, taken = nobodys_listener()
    ours = [listening() for _ in range(3)]
    try:
        agents = [s.getsockname()[1] for s in ours]
        check = headlife.hold_node_ports(agents, os.getpid(), 5, metrics_port=taken)
    finally:
        eve.kill()
        for s in ours:
            s.close()
    assert check.taken and f"node's metrics export port {taken} is held" in check.why
