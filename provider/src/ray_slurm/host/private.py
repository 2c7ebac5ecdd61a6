"""Paths only the user can use: the one check behind every directory the product reads or writes.

On a shared login node every other account is a possible attacker. A directory is used only if
nobody else could have made it or can change what is in it:

- it is a real directory (not a symlink), owned by the user, with no group/other access;
- every directory above it is owned by root or the user, and one that others may write to is
  sticky (like ``/tmp``), so nobody else can rename or replace what lies below it.

``mkdir -p -m 700`` is not enough: it accepts a directory that already exists, whoever made it.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


class UnsafePathError(RuntimeError):
    """A path the user's Ray would use is not private; the message names it and says why."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        self.path = os.fspath(path)
        self.why = why
        super().__init__(
            f"{self.path} {why}: refusing to use it (another account could read or change what "
            "Ray keeps there); remove it or choose another path"
        )


def user_name() -> str:
    """The login name of the process's own uid: not $USER or $LOGNAME, which anyone can set."""
    return pwd.getpwuid(os.geteuid()).pw_name


def _problem(st: os.stat_result, uid: int, private: bool) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    mode = stat.S_IMODE(st.st_mode)
    if private:
        if st.st_uid != uid:
            return f"is owned by uid {st.st_uid}, not by you (uid {uid})"
        if mode & 0o077:
            return f"has mode {mode:04o}: others may use it (0700 is required)"
        return None
    if st.st_uid not in (0, uid):
        return f"is owned by uid {st.st_uid}, neither root nor you (uid {uid})"
    if mode & 0o022 and not mode & stat.S_ISVTX:
        return f"has mode {mode:04o}: others may write to it and it is not sticky"
    return None


def check_ancestors(path: str | os.PathLike[str]) -> None:
    """Every directory above ``path`` is one nobody else can rename or replace things in."""
    uid = os.geteuid()
    for parent in Path(os.path.abspath(path)).parents:
        # stat, not lstat: /var/run -> /run style links are the admin's; their targets count.
        try:
            st = os.stat(parent)
        except (FileNotFoundError, NotADirectoryError):
            continue  # not made yet: it will be made private (or cannot be: mkdir says so)
        why = _problem(st, uid, private=False)
        if why:
            raise UnsafePathError(parent, why)


def check_private_dir(path: str | os.PathLike[str]) -> None:
    """``path`` is the user's own 0700 directory, below ones only root or the user control."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise UnsafePathError(path, "does not exist") from None
    why = _problem(st, os.geteuid(), private=True)
    if why:
        raise UnsafePathError(path, why)
    check_ancestors(path)


def ensure_private_dir(path: str | os.PathLike[str], parents: bool = False) -> Path:
    """Create ``path`` (0700, whatever the umask) unless it exists; then check it as above.

    With ``parents``, missing directories above it are created 0700 too. An existing directory is
    never adopted unless it passes the check. Its mode is tightened only if it is the user's own
    and nobody else could ever write to it (an old ``~/.ray-slurm`` made 0755 by a umask): a
    directory others could write to may hold what they planted, and is refused.
    """
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if parents and not path.parent.exists():
        ensure_private_dir(path.parent, parents=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        mine = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        if mine and st.st_mode & 0o077 and not st.st_mode & 0o022:
            os.chmod(path, 0o700)  # the user's own, readable by others: made under a loose umask
    else:
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    check_private_dir(path)
    return path
