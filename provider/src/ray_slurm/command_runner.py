"""Command runners for `ray up`, `ray exec`, `ray attach` and `ray down`: never SSH.

A node of this provider is either the login node itself (``LocalCommandRunner``) or a SLURM job,
reached with ``srun --jobid=<id> --overlap`` (``SrunCommandRunner``). Nodes share the filesystem,
so "rsync" is a local copy. ``~`` is the user's home, the same for a copy and for the command that
uses it (``ray submit``, ``ray rsync-up``), but for the files Ray uploads for itself
(``~/ray_bootstrap_config.yaml``, ``~/ray_bootstrap_key.pem``): those go to the cluster's own
directory, so that two clusters of one user never overwrite each other's.

``ray stop`` would stop every Ray process of the user on that host, other clusters' included;
the runners hand it to the provider, which stops only this cluster's node.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ray.autoscaler._private.subprocess_output_util import ProcessRunnerError
from ray.autoscaler.command_runner import CommandRunnerInterface

from ray_slurm.slurm import clean_env

logger = logging.getLogger(__name__)


_RAY_STOP_RE = re.compile(r"(^|[\s;&|(/])ray\s+stop\b")
# What `ray up` uploads to every node's ~ for Ray itself: kept per cluster.
_CLUSTER_FILES = ("~/ray_bootstrap_config.yaml", "~/ray_bootstrap_key.pem")


class NodeStartTimeout(RuntimeError):
    """A node's job did not start in time and was given up (and cancelled)."""


def is_ray_stop(cmd: str | None) -> bool:
    """Whether ``cmd`` is exactly ``ray stop [--options]``."""
    try:
        words = shlex.split(cmd) if cmd else []
    except ValueError:
        return False
    return (
        len(words) >= 2
        and os.path.basename(words[0]) == "ray"
        and words[1] == "stop"
        and all(w.startswith("-") for w in words[2:])
    )


def check_no_unscoped_stop(cmd: str | None) -> None:
    """Refuse ``ray stop`` inside a longer command: it would stop other clusters' Ray too."""
    if cmd and not is_ray_stop(cmd) and _RAY_STOP_RE.search(cmd):
        raise ProcessRunnerError(
            "`ray stop` stops every Ray process of the user on that host, other clusters' too; "
            "run `ray stop` on its own (this provider then stops only this cluster's node)",
            "ssh_command_failed", command=cmd,
        )  # fmt: skip


class LocalCommandRunner(CommandRunnerInterface):
    """Runs commands on this host (the login node, where the login-mode head runs)."""

    def __init__(
        self,
        log_prefix: str,
        home: str,
        env: dict[str, str],
        stop_ray: Callable[[], None],
        process_runner: Any = subprocess,
    ) -> None:
        self.log_prefix = log_prefix
        self.home = home
        self.env = env
        self.stop_ray = stop_ray
        self.process_runner = process_runner

    def wrap(self, argv: list[str]) -> list[str]:
        """The final argv; the srun runner puts it inside a job step."""
        return argv

    def check_ready(self) -> None:
        """The login node is always there to run commands."""

    def run(
        self,
        cmd: str | None = None,
        timeout: int = 120,
        exit_on_fail: bool = False,
        port_forward: Any = None,
        with_output: bool = False,
        environment_variables: dict[str, object] | None = None,
        run_env: str = "auto",
        ssh_options_override_ssh_key: str = "",
        shutdown_after_run: bool = False,
    ) -> str:
        if is_ray_stop(cmd):
            logger.info("%sray stop: stopping only this cluster's node", self.log_prefix)
            self.stop_ray()
            return ""
        check_no_unscoped_stop(cmd)
        self.check_ready()
        env = {**self.env, **{k: str(v) for k, v in (environment_variables or {}).items()}}
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(env.items()))
        argv = self.wrap(["bash", "-c", exports + (cmd or 'exec "${SHELL:-bash}" -l')])
        logger.debug("%srunning %s", self.log_prefix, argv)
        try:
            if with_output:
                out = self.process_runner.check_output(argv, env=clean_env(), timeout=timeout)
                return out.decode() if isinstance(out, bytes) else out
            self.process_runner.check_call(argv, env=clean_env())
            return ""
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            if exit_on_fail:
                sys.exit(getattr(exc, "returncode", 1) or 1)
            raise ProcessRunnerError(
                "Command failed", "ssh_command_failed",
                code=getattr(exc, "returncode", None), command=argv,
            ) from exc  # fmt: skip

    def _local_path(self, path: str) -> str:
        if path in _CLUSTER_FILES:
            return os.path.join(self.home, path[2:])
        return os.path.expanduser(path)

    def _copy(self, source: str, target: str) -> None:
        if os.path.isdir(source):
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            if target.endswith("/"):
                target = os.path.join(target, os.path.basename(source))
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            if os.path.abspath(source) != os.path.abspath(target):
                shutil.copy2(source, target)

    def run_rsync_up(self, source: str, target: str, options: Any = None) -> None:
        self._copy(source, self._local_path(target))

    def run_rsync_down(self, source: str, target: str, options: Any = None) -> None:
        self._copy(self._local_path(source), target)

    def remote_shell_command_str(self) -> str:
        return "bash\n"

    def run_init(self, *, as_head: bool, file_mounts: dict[str, str], sync_run_yet: bool) -> None:
        return None


class SrunCommandRunner(LocalCommandRunner):
    """Runs commands inside a node's SLURM job as an extra step that shares its CPUs."""

    def __init__(
        self, job_id: str, srun: str, not_ready: Callable[[], str | None], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.srun = srun
        self.not_ready = not_ready

    def check_ready(self) -> None:
        """A job that does not run yet cannot take a step: say why, and let Ray retry.

        Ray's node updater retries errors it classifies as an SSH timeout; srun would only say
        "Job is pending execution", so the SLURM state and pending reason are reported here.
        """
        try:
            reason = self.not_ready()
        except NodeStartTimeout as exc:
            print(f"{self.log_prefix}{exc}", file=sys.stderr)
            raise ProcessRunnerError(str(exc), "ssh_command_failed", command=self.job_id) from exc
        if reason:
            logger.info("%sjob %s is not running yet: %s", self.log_prefix, self.job_id, reason)
            print(f"{self.log_prefix}SLURM job {self.job_id}: {reason}", file=sys.stderr)
            raise ProcessRunnerError(
                f"job {self.job_id} not running: {reason}", "ssh_command_failed",
                command=[self.srun, f"--jobid={self.job_id}"], special_case="ssh_timeout",
            )  # fmt: skip

    def wrap(self, argv: list[str]) -> list[str]:
        pty = ["--pty"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        return [self.srun, f"--jobid={self.job_id}", "--overlap", "--nodes=1", "--ntasks=1",
                "--quiet", *pty, *argv]  # fmt: skip

    def remote_shell_command_str(self) -> str:
        return f"{self.srun} --jobid={self.job_id} --overlap --pty bash\n"
