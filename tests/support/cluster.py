"""One Ray cluster an account launches with real ``ray up``/``ray down`` from a config file."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from ray_slurm.backends.slurm.client import Job
from support.accounts import Account
from support.jobs import cancel, cluster_jobs

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ray-slurm.yaml"

# The head as a SLURM job of its own: one CPU, so tasks needing 2 CPUs go to workers.
SLURM_HEAD_TYPE: dict[str, Any] = {
    "resources": {"CPU": 1},
    "node_config": {"partition": "debug", "cpus": 1, "memory": "1500M", "time": "00:30:00"},
    "max_workers": 0,
}


def example_config(name: str, state_dir: Path) -> dict[str, Any]:
    """A copy of the example ``ray-slurm.yaml`` (what the README starts from), renamed."""
    cfg: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    cfg["cluster_name"] = name
    cfg["provider"]["state_dir"] = str(state_dir)
    return cfg


class Cluster:
    """A cluster of ``account``'s, launched from ``config`` written to ``workdir/<name>.yaml``."""

    def __init__(self, name: str, workdir: Path, account: Account, config: dict[str, Any]) -> None:
        self.name = name
        self.user = account
        self.config = config
        self.state_dir = Path(config["provider"]["state_dir"]) / name
        self.config_path = account.write(workdir / f"{name}.yaml", yaml.safe_dump(config))
        self.is_up = False
        self.up_s = 0.0

    def ray(self, *args: str, timeout: float = 300, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return self.user.run([self.user.bin("ray"), *args], timeout=timeout, check=check, **kw)

    def up(self, *options: str) -> float:
        """``ray up -y [options] <config>``; returns its wall time."""
        started = time.monotonic()
        self.is_up = True
        self.ray("up", "-y", *options, str(self.config_path), timeout=420)
        self.up_s = time.monotonic() - started
        return self.up_s

    def down(self, env: dict[str, str] | None = None) -> float:
        """``ray down -y <config>``; returns its wall time."""
        started = time.monotonic()
        self.ray("down", "-y", str(self.config_path), timeout=300, env=env)
        self.is_up = False
        return time.monotonic() - started

    def env(self) -> dict[str, str]:
        """The driver environment ``ray-slurm env`` prints (what the README tells users)."""
        out = self.user.run([self.user.bin("ray-slurm"), "env", str(self.config_path)],
                            timeout=60).stdout  # fmt: skip
        env = self.user.environ()
        for line in out.splitlines():
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").partition("=")
                env[key] = value.strip("'")
        return env

    def head(self) -> dict[str, Any]:
        """The head's address record (head.json), as the head published it."""
        record: dict[str, Any] = json.loads((self.state_dir / "head.json").read_text())
        return record

    def login_head_pid(self) -> int:
        state = json.loads((self.state_dir / "state.json").read_text())
        return int(state["login_head"]["pid"])

    def autoscaler_log(self) -> str:
        path = Path(self.head()["autoscaler_log"])
        return path.read_text() if path.exists() else ""

    def status(self) -> str:
        return self.user.run([self.user.bin("ray-slurm"), "status", str(self.config_path)],
                             timeout=60).stdout  # fmt: skip

    def jobs(self, kind: str | None = None) -> list[Job]:
        """This cluster's SLURM jobs that still exist, found from SLURM alone."""
        return cluster_jobs(self.user.jobs(), self.name, kind)

    def driver(self, code: str, timeout: float = 300, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """A Ray program run on the login node with the cluster's driver environment."""
        return self.user.run([self.user.bin("python"), "-c", code], timeout=timeout, check=check,
                             env=env or self.env())  # fmt: skip

    def exec(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.ray("exec", str(self.config_path), command, timeout=timeout)

    def cleanup(self) -> list[Job]:
        """``ray down`` if still up; the cluster's jobs left after it are cancelled and returned.
        The head's autoscaler log goes with ``ray down`` (it is in the head's temp dir): a copy
        is kept in the cluster's logs first, for whoever reads a failed test."""
        if self.is_up:
            with contextlib.suppress(OSError, ValueError, KeyError):
                shutil.copyfile(self.head()["autoscaler_log"], self.state_dir / "logs" /
                                "monitor.log")  # fmt: skip
            self.ray("down", "-y", str(self.config_path), timeout=300, check=False)
            self.is_up = False
        left = self.jobs()
        cancel(left)
        return left
