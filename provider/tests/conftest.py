"""Shared fixtures: the example cluster config, bootstrapped into a private tmp state dir.

Nothing here talks to SLURM or Ray; SLURM commands are replaced by tiny scripts in a tmp bin dir
where a test needs our handling of their output or failures.
"""

from __future__ import annotations

import copy
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_slurm import config
from ray_slurm.hooks import usertmp
from ray_slurm.host.state import ClusterDir

EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "ray-slurm.yaml"

MiB = 1024**2


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A default ``~/.ray-slurm`` must never be the user's real one."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(scope="session")
def example_yaml() -> dict[str, Any]:
    with open(EXAMPLE_CONFIG) as f:
        return yaml.safe_load(f)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def raw_config(example_yaml: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    """A fresh copy of the example, its state kept under tmp_path; tests may change it."""
    cfg = copy.deepcopy(example_yaml)
    cfg["provider"]["state_dir"] = str(state_dir)
    return cfg


@pytest.fixture
def bootstrapped(raw_config: dict[str, Any]) -> dict[str, Any]:
    return config.bootstrap(copy.deepcopy(raw_config))


@pytest.fixture
def settings(bootstrapped: dict[str, Any]) -> config.Settings:
    return config.load_settings(bootstrapped["provider"], bootstrapped["cluster_name"])


@pytest.fixture
def cluster(settings: config.Settings) -> ClusterDir:
    return ClusterDir(settings.state_dir, settings.cluster_name)


@pytest.fixture
def config_file(raw_config: dict[str, Any], tmp_path: Path) -> Path:
    """The example written to disk with the tmp state_dir (for the CLI)."""
    path = tmp_path / "ray-slurm.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    return path


@pytest.fixture
def make_settings(raw_config: dict[str, Any]) -> Callable[..., config.Settings]:
    """Settings of the example after ``change(cfg)`` edited it (raises ConfigError if invalid)."""

    def make(change: Callable[[dict[str, Any]], Any] | None = None) -> config.Settings:
        cfg = copy.deepcopy(raw_config)
        if change is not None:
            change(cfg)
        config.bootstrap(cfg)
        return config.load_settings(cfg["provider"], cfg["cluster_name"])

    return make


@pytest.fixture
def fake_bin(tmp_path: Path) -> Callable[[str, str], Path]:
    """``fake_bin(name, body)`` writes an executable bash script into one tmp bin dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)

    def write(name: str, body: str) -> Path:
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    return write


def mode(path: os.PathLike[str] | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def fresh_tmp(tmp_path, monkeypatch):
    """A process as it starts: TMPDIR at a sticky shared dir, no RAY_TMPDIR, hook not run."""
    base = tmp_path / "tmp"
    base.mkdir()
    os.chmod(base, 0o1777)
    monkeypatch.setenv("TMPDIR", str(base))
    for name in ("RAY_TMPDIR", usertmp.PROBLEM_ENV):  # set by activate(): undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(usertmp, "_active", False)
    return base
