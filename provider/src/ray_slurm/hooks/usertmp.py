"""A private temp root per user and host, for the files Ray puts at names anyone can compute.

Ray keeps files in the shared temp dir under names every account can predict: ``ray up``/
``exec``/``attach``/``submit``/``down`` cache the resolved cluster config as
``<tmp>/ray-config-<sha256 of the config>`` and run what a cached file says without checking who
wrote it (everyone who copies the site's ``ray-slurm.yaml`` unchanged has the same key); Ray's
default temp dir is ``<tmp>/ray``, where ``ray.init()`` reads ``ray_current_cluster`` to find a
cluster. The launcher reads the cache before it loads any provider code, so the provider alone
cannot protect it.

So the package installs a start-up hook, ``ray_slurm_private_tmp.pth``: every Python of the Ray
environment calls ``activate()`` at start-up, which points Python's ``tempfile`` and Ray's
``RAY_TMPDIR`` at ``<TMPDIR or /tmp>/ray-slurm-<uid>``, a directory only the user can use
(checked by ``private``: owned by the user, 0700, not a symlink). If another account made that
directory first, the process gets a fresh ``mkdtemp`` directory instead (nothing planted is
read) and the provider and the ``ray-slurm`` commands refuse to go on, naming the path.
The hook costs a ``mkdir`` attempt and a few ``stat`` calls (the root and the directories above it).
"""

from __future__ import annotations

import os
import tempfile

from ray_slurm.host.private import UnsafePathError, check_private_dir, ensure_private_dir

# Set by activate() when the expected root was unusable: the reason, for require() to report.
PROBLEM_ENV = "RAY_SLURM_TMP_PROBLEM"
RAY_TMPDIR_ENV = "RAY_TMPDIR"

_active = False


def expected_root() -> str:
    """``<TMPDIR or /tmp>/ray-slurm-<uid>``: short (Ray's socket paths must stay < 107 bytes)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(base, f"ray-slurm-{os.geteuid()}")


def activate() -> None:
    """Point ``tempfile`` and Ray at the user's private temp root. Never raises (start-up hook).

    Once per process: site.py may read the .pth twice (a venv's lib64 -> lib link), and a second
    run would take the fallback directory for the user's choice and forget the problem.
    """
    global _active
    if _active:
        return
    _active = True
    os.environ.pop(PROBLEM_ENV, None)
    root = os.environ.get(RAY_TMPDIR_ENV)
    if root:  # the user's own choice (or a parent's), kept only if it is private here
        try:
            check_private_dir(root)
        except (UnsafePathError, OSError):
            root = None
    if not root:
        try:
            root = str(ensure_private_dir(expected_root()))
        except UnsafePathError as exc:
            os.environ[PROBLEM_ENV] = f"{exc.path}\n{exc.why}"
        except OSError as exc:
            os.environ[PROBLEM_ENV] = f"{expected_root()}\ncannot be created: {exc.strerror}"
        if not root:
            root = tempfile.mkdtemp(prefix=f"ray-slurm-{os.geteuid()}-")  # unpredictable, 0700
    tempfile.tempdir = root
    os.environ[RAY_TMPDIR_ENV] = root


def hooked() -> bool:
    """Whether the start-up hook has run in this process (the wheel installs it; an editable
    install does not): the provider role checks this after installing."""
    return _active


def require() -> str:
    """The private temp root of this process; raises UnsafePathError naming the bad path."""
    if not _active:
        activate()  # the hook is not installed in this environment (an editable install)
    problem = os.environ.get(PROBLEM_ENV)
    if problem:
        path, _, why = problem.partition("\n")
        raise UnsafePathError(path, why)
    return os.environ[RAY_TMPDIR_ENV]
