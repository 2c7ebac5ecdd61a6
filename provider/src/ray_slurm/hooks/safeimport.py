"""No Python of the Ray environment imports code from a directory another account can write.

Python puts a directory of the caller's choosing first on ``sys.path``: the working directory
for ``python -c``/``-m`` and the interactive prompt, the script's directory otherwise. Ray
starts many of its processes with ``-m`` and ``-c`` in whatever directory it was started in,
and adds the driver's working directory to every worker's ``sys.path``. Typed in ``/tmp`` (or
run by a job that inherited it), a ``ray.py`` another account put there would be imported and
run as the user.

The start-up hook (``ray_slurm_private_tmp.pth``) therefore calls ``activate()`` in every
Python of the environment: it puts a path hook first in ``sys.path_hooks``, which Python asks
about each ``sys.path`` entry before any import from it (entries added later included, such as
Ray's driver paths on a worker). A directory others can write is answered with a finder that
finds nothing, and one line on stderr names it; every other entry goes to Python's own finders.

Trusted: directories owned by the user, by root, or by the owner of this Python environment
(the site's admin, who can change the interpreter anyway), that neither others nor a group
other than the user's own private group can write to. ``/tmp`` (sticky, but anyone can create
files in it) is not trusted.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

_active = False
_refused: set[str] = set()


def _own_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is the user's private group (Debian's default: the user's name, with
    no other member), so that a umask of 002 does not make the user's own directories unsafe."""
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def unsafe_reason(path: str, uid: int | None = None, env_owner: int | None = None) -> str | None:
    """Why another account could put a module in ``path`` (None: it cannot, or no directory)."""
    uid = os.geteuid() if uid is None else uid
    owner = _prefix_owner() if env_owner is None else env_owner
    try:
        st = os.stat(path)
    except OSError:
        return None  # nothing there: Python's own finders find nothing either
    if not stat.S_ISDIR(st.st_mode):
        return None  # a zip file or the like: Python's zipimport decides
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (uid, 0, owner):
        return f"is owned by uid {st.st_uid}"
    if mode & stat.S_IWOTH:
        return f"has mode {mode:04o}: every account can write to it"
    if mode & stat.S_IWGRP and not _own_group(st.st_gid, uid):
        return f"has mode {mode:04o}: group {st.st_gid} can write to it"
    return None


def _prefix_owner() -> int:
    try:
        return os.stat(sys.prefix).st_uid
    except OSError:
        return 0


class _NothingHere:
    """The finder of a refused directory: it finds no module there."""

    def __init__(self, path: str) -> None:
        self.path = path

    def find_spec(self, fullname: str, target: ModuleType | None = None) -> ModuleSpec | None:
        return None

    def invalidate_caches(self) -> None:
        return None


def _hook(entry: str) -> _NothingHere:
    """Asked by Python for each sys.path entry: refuse it, or hand it on (ImportError)."""
    path = os.path.abspath(entry or os.curdir)
    why = unsafe_reason(path)
    if why is None:
        raise ImportError("not refused: Python's own finders handle it")
    if path not in _refused:
        _refused.add(path)
        sys.stderr.write(f"ray-slurm: not importing Python from {path}: it {why}\n")
    return _NothingHere(path)


def activate() -> None:
    """Install the path hook (once; never raises: it runs at every start-up)."""
    global _active
    if _active:
        return
    _active = True
    sys.path_hooks.insert(0, _hook)
    sys.path_importer_cache.clear()  # entries Python already looked at are asked again
