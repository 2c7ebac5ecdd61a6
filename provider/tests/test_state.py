"""The per-cluster directory: private modes, the token, locked atomic updates, the head record."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from conftest import mode

from ray_slurm.host.state import STATE_VERSION, ClusterDir, Head, write_private


@pytest.fixture
def cdir(tmp_path):
    return ClusterDir(tmp_path / "state", "demo")


def leftovers(directory):
    """Temp files an atomic write would leave behind if it failed to clean up."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_paths(tmp_path, cdir):
    assert cdir.root == tmp_path / "state" / "demo"
    assert cdir.state_file == cdir.root / "state.json"
    assert cdir.token_file == cdir.root / "token"
    assert cdir.head_file == cdir.root / "head.json"
    assert ClusterDir.at(cdir.root).root == cdir.root


def test_state_dir_tilde_is_expanded(_private_home):
    assert ClusterDir("~/.ray-slurm", "c").root == _private_home / ".ray-slurm" / "c"


def test_create_makes_private_dirs(cdir):
    assert cdir.create() is cdir
    for d in (cdir.root, cdir.jobs_dir, cdir.logs_dir):
        assert d.is_dir()
        assert mode(d) == 0o700


def test_create_tightens_existing_dirs(cdir):
    cdir.root.mkdir(parents=True, mode=0o755)
    os.chmod(cdir.root, 0o755)
    cdir.create()
    assert mode(cdir.root) == 0o700


def test_ensure_token_created_once_private(cdir):
    token = cdir.ensure_token()
    assert len(token) == 64
    int(token, 16)  # hex
    assert mode(cdir.token_file) == 0o600
    inode = cdir.token_file.stat().st_ino
    assert cdir.ensure_token() == token
    assert cdir.token_file.stat().st_ino == inode  # not rewritten
    assert ClusterDir("x", "y").root != cdir.root
    other = ClusterDir(cdir.root.parent, "other").ensure_token()
    assert other != token


def test_read_state_of_new_cluster(cdir):
    assert cdir.read_state() == {"version": STATE_VERSION, "nodes": {}}


def test_update_writes_private_valid_json(cdir):
    with cdir.update() as state:
        state["nodes"]["42"] = {"tags": {"a": "b"}}
    assert mode(cdir.state_file) == 0o600
    on_disk = json.loads(cdir.state_file.read_text())
    assert on_disk["nodes"] == {"42": {"tags": {"a": "b"}}}
    assert on_disk["version"] == STATE_VERSION
    assert isinstance(on_disk["updated"], float)
    assert cdir.read_state()["nodes"] == on_disk["nodes"]
    assert leftovers(cdir.root) == []


def test_update_writes_nothing_when_body_raises(cdir):
    with pytest.raises(KeyError), cdir.update() as state:
        state["nodes"]["1"] = {}
        raise KeyError("boom")
    assert not cdir.state_file.exists()

    with cdir.update() as state:
        state["nodes"]["2"] = {"ok": True}
    before = cdir.state_file.read_bytes()
    with pytest.raises(ValueError), cdir.update() as state:
        state["nodes"].clear()
        state["nodes"]["3"] = {}
        raise ValueError("boom")
    assert cdir.state_file.read_bytes() == before
    assert leftovers(cdir.root) == []


def test_update_releases_the_lock_after_an_error(cdir):
    with pytest.raises(RuntimeError), cdir.update():
        raise RuntimeError("boom")
    with cdir.update() as state:  # would deadlock if the lock were still held
        state["nodes"]["x"] = {}
    assert "x" in cdir.read_state()["nodes"]


def _increment(root: str, times: int) -> None:
    cluster = ClusterDir.at(root)
    for _ in range(times):
        with cluster.update() as state:
            state["counter"] = state.get("counter", 0) + 1


def test_concurrent_updates_lose_nothing(cdir):
    cdir.create()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment, args=(str(cdir.root), 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert cdir.read_state()["counter"] == 200
    assert leftovers(cdir.root) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"version": 1, "nodes": {', "not valid JSON"),  # truncated mid-write
        ("", "not valid JSON"),  # empty (a full quota)
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"version": 99, "nodes": {}}), "version 99, this provider reads 1"),
        (json.dumps({"version": 1, "nodes": []}), "no 'nodes' object"),
    ],
)
def test_unusable_state_is_moved_aside_never_an_error(cdir, caplog, text, problem):
    cdir.create()
    cdir.state_file.write_text(text)
    assert cdir.read_state() == {"version": STATE_VERSION, "nodes": {}}
    aside = [p for p in cdir.root.iterdir() if p.name.startswith("state.json.bad-")]
    assert len(aside) == 1 and aside[0].read_text() == text  # kept for a post-mortem
    assert not cdir.state_file.exists()
    assert problem in caplog.text and str(cdir.state_file) in caplog.text
    with cdir.update() as state:  # and the next update starts afresh
        state["nodes"]["7"] = {"tags": {}}
    assert cdir.read_state()["nodes"] == {"7": {"tags": {}}}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_filesystem_without_flock_is_a_clear_error_and_leaks_nothing(cdir, monkeypatch):
    """Lustre mounted ``noflock`` answers flock with ENOSYS, some NFS setups with ENOLCK. No
    such mount here: the refusal is produced by replacing ``fcntl.flock`` (docs/faults.md)."""
    import errno

    from ray_slurm.host import state as state_module

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    cdir.create()
    monkeypatch.setattr(state_module.fcntl, "flock", refuse)
    before = _open_fds()
    for _ in range(50):  # the autoscaler asks every few seconds
        with pytest.raises(state_module.StateLockError) as excinfo, cdir.update():
            pass
    assert _open_fds() == before
    message = str(excinfo.value)
    assert str(cdir.lock_file) in message and "No locks available" in message
    assert "provider.state_dir" in message


def test_head_start_has_a_lock_of_its_own(cdir):
    with cdir.locked("head"), cdir.update() as state:  # held together: no deadlock
        state["x"] = 1
    assert (cdir.root / "head.lock").exists()


def test_write_private_failure_keeps_old_file(tmp_path):
    target = tmp_path / "f"
    write_private(target, "old\n")
    assert mode(target) == 0o600
    with pytest.raises(TypeError):
        write_private(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_write_private_custom_mode(tmp_path):
    target = tmp_path / "job.sh"
    write_private(target, "#!/bin/bash\n", 0o700)
    assert mode(target) == 0o700


def test_head_record_publish_read_clear(cdir):
    assert cdir.read_head() is None
    record = {"ip": "10.0.0.1", "gcs_port": 24001, "node_id": "77"}
    cdir.publish_head(record)
    assert cdir.read_head() == record
    assert mode(cdir.head_file) == 0o600
    assert mode(cdir.root) == 0o700

    cdir.bootstrap_config.write_text("cluster_name: demo\n")
    cdir.ensure_token()
    cdir.clear_head()
    assert cdir.read_head() is None
    assert not cdir.head_file.exists()
    assert not cdir.bootstrap_config.exists()
    assert cdir.token_file.exists()  # the token outlives the head
    cdir.clear_head()  # nothing left to clear is fine


def test_unreadable_head_record_is_no_head(cdir):
    cdir.create()
    cdir.head_file.write_text("{not json")
    assert cdir.read_head() is None


_WRITER = """
import sys
from ray_slurm.host.state import ClusterDir
cluster = ClusterDir(sys.argv[1], "c")
i = 0
while True:
    with cluster.update() as state:
        state["counter"] = i
        state["payload"] = "x" * 200_000  # big enough that a write takes a while
    i += 1
"""


def test_state_survives_a_writer_killed_mid_write(tmp_path):
    """kill -9 a process while it rewrites the state: the file is always complete JSON."""
    import signal
    import subprocess
    import sys
    import time

    cluster = ClusterDir(tmp_path, "c")
    for delay in (0.05, 0.13, 0.29):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)])
        deadline = time.monotonic() + 30
        while "counter" not in cluster.read_state() and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer is running
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = cluster.read_state()  # raises on a torn file
        assert state["payload"] == "x" * 200_000
        with cluster.update() as state:  # and the lock is free again
            state["after_kill"] = delay
    leftovers = [p for p in os.listdir(cluster.root) if p.startswith(".state.json.")]
    assert len(leftovers) <= 3  # a killed writer may leave its temp file, never a torn state


def test_a_head_record_needs_only_an_address(cdir):
    """A head that published only where the GCS is (as an old head did) is still found."""
    cdir.publish_head({"ip": "10.0.0.1", "gcs_port": 6379})
    head = cdir.head()
    assert head is not None and head.address == "10.0.0.1:6379"
    assert head.dashboard_port == 0


def test_a_head_record_without_an_address_names_the_missing_field():
    with pytest.raises(KeyError, match="gcs_port"):
        Head.from_record({"ip": "10.0.0.1"})
