"""Private paths and the private temp root: nothing another account made or can write is used.

The tests run as root, so "another account" is a directory chowned to nobody (65534).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from ray_slurm.hooks import usertmp
from ray_slurm.host.private import UnsafePathError, check_private_dir, ensure_private_dir
from ray_slurm.host.state import ClusterDir

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o002)  # a shared group's umask
    yield
    os.umask(old)


def test_a_new_directory_is_0700_whatever_the_umask(tmp_path, loose_umask):
    made = ensure_private_dir(tmp_path / "a" / "b", parents=True)
    assert mode(made) == 0o700 and mode(made.parent) == 0o700


def test_the_users_own_readable_directory_is_tightened(tmp_path):
    d = tmp_path / "old"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    ensure_private_dir(d)
    assert mode(d) == 0o700


@pytest.mark.parametrize(
    "plant, why",
    [
        (lambda p: (p.mkdir(), os.chown(p, NOBODY, NOBODY)), "is owned by uid 65534"),
        (lambda p: (p.mkdir(), os.chmod(p, 0o777)), "has mode 0777"),
        (lambda p: (p.with_name("t").mkdir(), p.symlink_to(p.with_name("t"))), "symbolic link"),
        (lambda p: p.write_text(""), "is not a directory"),
    ],
    ids=["another-owner", "writable-by-others", "symlink", "a-file"],
)
def test_a_planted_path_is_refused_naming_it(tmp_path, plant, why):
    path = tmp_path / "planted"
    plant(path)
    with pytest.raises(UnsafePathError, match=why) as exc:
        ensure_private_dir(path)
    assert str(path) in str(exc.value) and "refusing to use it" in str(exc.value)


def test_a_directory_below_a_neighbours_one_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    mine = theirs / "mine"
    mine.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)  # they could rename "mine" and put their own in its place
    with pytest.raises(UnsafePathError, match="owned by uid 65534, neither root nor you") as exc:
        check_private_dir(mine)
    assert exc.value.path == str(theirs)


def test_below_a_shared_directory_only_a_sticky_one_is_safe(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafePathError, match="not sticky"):
        ensure_private_dir(shared / "mine")
    os.chmod(shared, 0o1777)  # like /tmp
    assert mode(ensure_private_dir(shared / "mine")) == 0o700


def test_a_cluster_directory_another_account_made_is_refused(tmp_path):
    root = tmp_path / "state" / "c1"
    root.mkdir(parents=True, mode=0o700)
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(UnsafePathError, match=str(root)):
        ClusterDir(tmp_path / "state", "c1").create()


def test_cluster_files_are_private_under_a_loose_umask(tmp_path, loose_umask):
    cluster = ClusterDir(tmp_path / "home" / ".ray-slurm", "c1").create()
    cluster.ensure_token()
    with cluster.update() as state:
        state["nodes"]["1"] = {}
    for d in (cluster.root.parent, cluster.root, cluster.jobs_dir, cluster.logs_dir):
        assert mode(d) == 0o700, d
    for f in (cluster.token_file, cluster.state_file, cluster.lock_file):
        assert mode(f) == 0o600, f


# ------------------------------------------------------------- the temp root


def test_activate_points_tempfile_and_ray_at_the_private_root(fresh_tmp):
    assert not usertmp.hooked()
    usertmp.activate()
    assert usertmp.hooked()
    root = fresh_tmp / f"ray-slurm-{os.geteuid()}"
    assert tempfile.gettempdir() == str(root)  # Ray's config cache goes here
    assert os.environ["RAY_TMPDIR"] == str(root)  # Ray's temp dir, ray_current_cluster
    assert mode(root) == 0o700
    assert usertmp.require() == str(root)


def test_a_root_planted_by_a_neighbour_is_not_used_and_is_reported(fresh_tmp):
    planted = fresh_tmp / f"ray-slurm-{os.geteuid()}"
    planted.mkdir()
    os.chmod(planted, 0o777)
    (planted / "ray-config-0123").write_text('{"config": "theirs"}')
    os.chown(planted, NOBODY, NOBODY)
    usertmp.activate()  # never raises: it runs at every Python start-up
    used = tempfile.gettempdir()
    assert used != str(planted) and not used.startswith(str(planted) + "/")
    assert os.environ["RAY_TMPDIR"] == used and mode(Path(used)) == 0o700
    usertmp.activate()  # site.py may run the hook twice (lib64 -> lib): still reported
    with pytest.raises(UnsafePathError, match="is owned by uid 65534") as exc:
        usertmp.require()
    assert exc.value.path == str(planted)


def test_a_private_ray_tmpdir_of_the_users_own_is_kept_a_shared_one_is_not(fresh_tmp, monkeypatch):
    own = ensure_private_dir(fresh_tmp / "own")
    monkeypatch.setenv("RAY_TMPDIR", str(own))
    usertmp.activate()
    assert tempfile.gettempdir() == str(own)

    monkeypatch.setenv("RAY_TMPDIR", str(fresh_tmp))  # the shared /tmp itself
    monkeypatch.setattr(usertmp, "_active", False)  # a new process
    usertmp.activate()
    assert tempfile.gettempdir() == str(fresh_tmp / f"ray-slurm-{os.geteuid()}")


def test_a_stale_problem_from_the_parent_process_is_not_reported(fresh_tmp, monkeypatch):
    monkeypatch.setenv(usertmp.PROBLEM_ENV, "/elsewhere\nis owned by uid 1")
    assert usertmp.require() == str(fresh_tmp / f"ray-slurm-{os.geteuid()}")
