"""No import from a directory another account can write (ray_slurm.hooks.safeimport).

The tests run as root, so "another account" is a directory chowned to nobody (65534); the
whole rule is also tested as Python applies it, in a fresh interpreter whose working directory
holds a planted module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ray_slurm.hooks.safeimport import unsafe_reason

NOBODY = 65534
PTH = Path(__file__).parents[1] / "src" / "ray_slurm_private_tmp.pth"


def a_dir(parent: Path, name: str, mode: int, owner: int | None = None) -> Path:
    path = parent / name
    path.mkdir()
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


def test_the_users_own_directory_is_trusted(tmp_path):
    assert unsafe_reason(str(a_dir(tmp_path, "mine", 0o755))) is None


@pytest.mark.parametrize(("mode", "why"), [(0o777, "every account"), (0o1777, "every account")])
def test_a_directory_everyone_can_write_is_refused_sticky_or_not(tmp_path, mode, why):
    """/tmp is sticky, but anyone may create a module in it."""
    assert why in unsafe_reason(str(a_dir(tmp_path, "shared", mode)))


def test_a_directory_of_another_account_is_refused(tmp_path):
    theirs = a_dir(tmp_path, "theirs", 0o755, owner=NOBODY)
    assert unsafe_reason(str(theirs), uid=1234, env_owner=0) == f"is owned by uid {NOBODY}"
    # ... unless that account owns the Python environment itself (the site's admin)
    assert unsafe_reason(str(theirs), uid=1234, env_owner=NOBODY) is None


def test_a_group_that_is_not_the_users_own_may_not_write(tmp_path):
    group_writable = a_dir(tmp_path, "group", 0o775)
    os.chown(group_writable, -1, 0)  # group root: not the private group of uid 65534
    assert "group 0 can write" in unsafe_reason(str(group_writable), uid=NOBODY, env_owner=0)


def test_what_is_not_a_directory_is_left_to_python(tmp_path):
    assert unsafe_reason(str(tmp_path / "missing")) is None
    (tmp_path / "lib.zip").write_bytes(b"")
    assert unsafe_reason(str(tmp_path / "lib.zip")) is None


def python_in(cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    """A fresh Python with the start-up hook's line (an editable install has no .pth), then
    ``code``, with ``python -c``'s working directory first on sys.path."""
    hook = PTH.read_text().strip().removeprefix("import ")
    prelude = f"import {hook}\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_a_module_planted_in_the_working_directory_is_not_imported(tmp_path):
    shared = a_dir(tmp_path, "shared", 0o1777)
    (shared / "planted.py").write_text("print('PLANTED RAN')\n")
    proc = python_in(shared, "import planted")
    assert "PLANTED RAN" not in proc.stdout
    assert "ModuleNotFoundError: No module named 'planted'" in proc.stderr, proc.stderr
    assert f"not importing Python from {shared}: it has mode 1777" in proc.stderr
    # Paths added later (Ray adds the driver's directories to a worker's sys.path) too.
    proc = python_in(tmp_path, f"import sys; sys.path.insert(0, {str(shared)!r}); import planted")
    assert "PLANTED RAN" not in proc.stdout and "No module named 'planted'" in proc.stderr


def test_the_users_own_working_directory_still_imports(tmp_path):
    mine = a_dir(tmp_path, "mine", 0o755)
    (mine / "helper.py").write_text("print('HELPER RAN')\n")
    proc = python_in(mine, "import helper")
    assert proc.returncode == 0 and "HELPER RAN" in proc.stdout, proc.stderr
    assert "not importing" not in proc.stderr
