"""Who runs the harness's commands: one of the site's unprivileged users, or the harness itself.

The end-to-end tests run every ``ray``/``ray-slurm`` command and driver as a user of the site
(``runuser`` with a plain login environment and the site's Ray environment on PATH); the
benchmarks run them as the harness, with this Python's environment. Both offer the same verbs,
so a ``Cluster`` does not ask which one it holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ray_slurm.backends.slurm.client import Job, Slurm
from support.procs import run

# The site whose login node the tests run on (`scripts/localsite [--site NAME] login` says which).
SITE_STATE = Path(os.environ.get("RSL_SITE_STATE", "/var/tmp/rayhpc-localsite"))
SITE_PREFIX = os.environ.get("RSL_PREFIX", "rsl")  # its hosts' namespaces: <prefix>-<node>
SITE_CONFIG = SITE_STATE / "shared" / "ray-slurm.yaml"  # what the site's playbook rendered


class SiteNotDeployed(RuntimeError):
    """The local site's ray-slurm.yaml is missing: ``scripts/localsite deploy`` was not run."""


def site_ray_env() -> Path:
    """The Ray environment the site's sysadmin deployed (the one users' PATH has)."""
    if not SITE_CONFIG.exists():
        raise SiteNotDeployed(f"{SITE_CONFIG} is missing: run `scripts/localsite deploy` first")
    return Path(yaml.safe_load(SITE_CONFIG.read_text())["provider"]["ray_env"])


class Account:
    """The harness itself: commands run as this process, with its environment and Python."""

    name = "harness"

    @property
    def home(self) -> Path:
        return Path.cwd()

    def bin(self, command: str) -> str:
        return str(Path(sys.executable).parent / command)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **(extra or {})}

    def argv(self, args: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        return [str(a) for a in args]

    def process_env(self, env: dict[str, str]) -> dict[str, str] | None:
        """The environment of the process started (a user's is in ``argv``: ``env -i``)."""
        return env

    def run(
        self, args: Sequence[str], timeout: float = 300, check: bool = True,
        env: dict[str, str] | None = None, **kw: Any,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        env = self.environ() if env is None else env
        return run(self.argv(args, env), timeout=timeout, check=check, cwd=self.home,
                   env=self.process_env(env), **kw)  # fmt: skip

    def popen(
        self, args: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:  # fmt: skip
        env = self.environ() if env is None else env
        return subprocess.Popen(
            self.argv(args, env), cwd=self.home, env=self.process_env(env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def write(self, path: Path, text: str, mode: int = 0o644) -> Path:
        path.write_text(text)
        os.chmod(path, mode)
        return path

    def mkdir(self, path: Path) -> Path:
        """A fresh, empty directory."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, mode=0o755)
        return path

    def jobs(self) -> list[Job]:
        """The SLURM jobs this account can see as its own (the harness: everyone's)."""
        return Slurm().squeue()


class User(Account):
    """One of the site's unprivileged accounts; commands run as it, in a plain environment.

    ``extra_env`` is added to every command's environment (the e2e tests' shorter autoscaler
    loop, for example).
    """

    def __init__(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.extra_env = dict(extra_env or {})

    def __repr__(self) -> str:
        return f"User({self.name!r})"

    @property
    def home(self) -> Path:
        return Path("/home") / self.name

    @property
    def uid(self) -> int:
        return int(subprocess.check_output(["id", "-u", self.name], text=True))

    def bin(self, command: str) -> str:
        return str(site_ray_env() / "bin" / command)

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "SHELL": "/bin/bash",
            "LANG": "C.UTF-8", "SLURM_CONF": os.environ["SLURM_CONF"],
            "PATH": f"{site_ray_env() / 'bin'}:/usr/bin:/bin", **self.extra_env, **(extra or {}),
        }  # fmt: skip

    def argv(self, args: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
        """``runuser`` with exactly ``env`` (default: the user's plain environment)."""
        env = self.environ() if env is None else env
        return ["runuser", "-u", self.name, "--", "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), *(str(a) for a in args)]  # fmt: skip

    def process_env(self, env: dict[str, str]) -> dict[str, str] | None:
        return None  # runuser starts as root with the harness's environment

    def write(self, path: Path, text: str, mode: int = 0o644) -> Path:
        """A file of the user's (written by the harness, owned by the user)."""
        path.write_text(text)
        os.chown(path, self.uid, self.uid)
        os.chmod(path, mode)
        return path

    def mkdir(self, path: Path) -> Path:
        """A fresh directory of the user's, everything missing above it inside the home too."""
        if path.exists():
            shutil.rmtree(path)
        made = [p for p in (path, *path.parents) if not p.exists()]
        path.mkdir(parents=True, mode=0o755)
        for p in made:
            os.chown(p, self.uid, self.uid)
        return path

    def jobs(self) -> list[Job]:
        return Slurm().squeue(user=self.name)
