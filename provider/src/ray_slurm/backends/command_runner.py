"""Command runners for `ray up`, `ray exec`, `ray attach` and `ray down`: never SSH.

A node of this provider is either the login node itself (``LocalCommandRunner``) or a SLURM job,
reached with ``srun --jobid=<id> --overlap`` (``SrunCommandRunner``); each backend picks its own
(``Backend.command_runner``). Nodes share the filesystem,
so "rsync" is a local copy. ``~`` is the user's home, the same for a copy and for the command that
uses it (``ray submit``, ``ray rsync-up``), but for the files Ray uploads for itself
(``~/ray_bootstrap_config.yaml``, ``~/ray_bootstrap_key.pem``): those go to the cluster's own
directory, so that two clusters of one user never overwrite each other's.

``ray stop`` would stop every Ray process of the user on that host, other clusters' included;
the runners hand it to the provider, which stops only this cluster's node. What Ray's other
commands ask of a node's shell is translated the same way:

* ``ray exec --stop`` appends ``ray stop; ray teardown ...; sudo shutdown -h now``: the command
  runs, then the provider stops the whole cluster, as ``ray down`` does.
* ``ray dashboard`` asks for an SSH port forward: the runner prints the ``ssh -L`` line that
  reaches the head's dashboard through the login node (the head's port is its own, not 8265).
* ``ray exec --screen/--tmux`` run where the tool exists on the login node; in a head's SLURM
  job they are refused, since the session would end with its job step.
* ``/tmp/ray/session_latest`` (Ray's hint for ``ray monitor`` and the autoscaler log) is the
  head's own session directory: each node's Ray runs in a private temp dir of its own.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from ray.autoscaler._private.subprocess_output_util import ProcessRunnerError
from ray.autoscaler.command_runner import CommandRunnerInterface

from ray_slurm.backends.slurm.jobenv import clean_env
from ray_slurm.host import tls
from ray_slurm.host.private import user_name
from ray_slurm.host.state import ClusterDir

logger = logging.getLogger(__name__)


_RAY_STOP_RE = re.compile(r"(^|[\s;&|(/])ray\s+stop\b")
# What `ray up` uploads to every node's ~ for Ray itself: kept per cluster.
_CLUSTER_FILES = ("~/ray_bootstrap_config.yaml", "~/ray_bootstrap_key.pem")


# What `ray exec --stop` appends to the command (Ray 2.60 commands.py, exec_cluster).
EXEC_STOP_SUFFIX = ("; ray stop; ray teardown ~/ray_bootstrap_config.yaml --yes --workers-only; "
                    "sudo shutdown -h now")  # fmt: skip
# How `ray exec`/`ray attach` wrap a command in a terminal session (commands.py, _exec/attach).
SESSION_PREFIXES = {"screen": ("screen -L -dm", "screen -L -xRR"),
                    "tmux": ("tmux new -d", "tmux attach || tmux new")}  # fmt: skip
RAY_SESSION_DIR = "/tmp/ray/session_latest"  # Ray's hard-coded hint


class CommandRefused(click.ClickException):
    """A `ray` command option this site cannot honour: Ray's CLI prints it and exits 1."""


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


def command_failed(message: str, kind: str, **details: Any) -> Exception:
    """Ray's own error for a failed node command (what its updaters catch and print)."""
    error: Exception = ProcessRunnerError(message, kind, **details)  # type: ignore[no-untyped-call]
    return error


def check_no_unscoped_stop(cmd: str | None) -> None:
    """Refuse ``ray stop`` inside a longer command: it would stop other clusters' Ray too."""
    if cmd and not is_ray_stop(cmd) and _RAY_STOP_RE.search(cmd):
        raise command_failed(
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
        *,
        stop_cluster: Callable[[], None],
        session_dir: str = "",
        dashboard: str = "",
    ) -> None:
        self.log_prefix = log_prefix
        self.home = home
        self.env = env
        self.stop_ray = stop_ray
        self.stop_cluster = stop_cluster
        self.process_runner = process_runner
        self.session_dir = session_dir  # the head's session_latest, if it runs
        self.dashboard = dashboard  # the head's dashboard address, if it runs

    def wrap(self, argv: list[str]) -> list[str]:
        """The final argv; the srun runner puts it inside a job step."""
        return argv

    def check_ready(self) -> None:
        """The login node is always there to run commands."""

    def check_session(self, tool: str) -> None:
        """`--screen`/`--tmux`: the tool must exist on the login node."""
        if shutil.which(tool) is None:
            raise CommandRefused(
                f"{tool} is not installed on this login node "
                f"({socket.gethostname()}): run the command without --{tool}"
            )

    def show_dashboard(self, port_forward: Any) -> None:
        """`ray dashboard`: how to reach the head's dashboard, on this node and from a laptop."""
        if not self.dashboard:
            raise CommandRefused("the cluster has no running head: run `ray up` first")
        pairs = [port_forward] if isinstance(port_forward, tuple) else list(port_forward)
        local = pairs[0][0] if pairs else 8265
        host = socket.getfqdn()
        click.echo(f"The dashboard runs at http://{self.dashboard} (reachable from {host}).")
        click.echo(f"From your computer: ssh -N -L {local}:{self.dashboard} {user_name()}@{host}"
                   f"  then open http://localhost:{local}")  # fmt: skip

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
        if cmd and cmd.endswith(EXEC_STOP_SUFFIX):
            return self._run_then_stop(cmd.removesuffix(EXEC_STOP_SUFFIX), timeout, exit_on_fail,
                                       with_output, environment_variables)  # fmt: skip
        if port_forward:
            self.show_dashboard(port_forward)
            if cmd is None:
                return ""
        for tool, prefixes in SESSION_PREFIXES.items():
            if cmd and cmd.startswith(prefixes):
                self.check_session(tool)
        if cmd and self.session_dir:
            cmd = cmd.replace(RAY_SESSION_DIR, self.session_dir)
        check_no_unscoped_stop(cmd)
        self.check_ready()
        env = {**self.env, **{k: str(v) for k, v in (environment_variables or {}).items()}}
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(env.items()))
        # Commands run in the cluster's private directory (as `ray exec` on a cloud runs in the
        # head's home), never in the caller's: Python puts the working directory on sys.path.
        cd = f"cd {shlex.quote(self.home)} && "
        argv = self.wrap(["bash", "-c", cd + exports + (cmd or 'exec "${SHELL:-bash}" -l')])
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
            raise command_failed(
                "Command failed", "ssh_command_failed",
                code=getattr(exc, "returncode", None), command=argv,
            ) from exc  # fmt: skip

    def _run_then_stop(self, cmd: str, timeout: int, exit_on_fail: bool, with_output: bool,
                       environment_variables: dict[str, object] | None) -> str:  # fmt: skip
        """`ray exec --stop`: the command, then the whole cluster stops, whatever its result
        (a failed command exits through here too: ``exit_on_fail`` raises SystemExit)."""
        try:
            return self.run(cmd, timeout=timeout, exit_on_fail=exit_on_fail,
                            with_output=with_output,
                            environment_variables=environment_variables)  # fmt: skip
        finally:
            click.echo(f"{self.log_prefix}ray exec --stop: stopping the cluster (as ray down)")
            self.stop_cluster()

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

    def check_session(self, tool: str) -> None:
        raise CommandRefused(
            f"--{tool} keeps a session after the command returns, but in the head's SLURM job "
            "a command is a job step, which ends with it: run the command without "
            f"--{tool} (it runs in the head's job until it ends), or `ray attach` and start "
            f"{tool} there"
        )

    def check_ready(self) -> None:
        """A job that does not run yet cannot take a step: say why, and let Ray retry.

        Ray's node updater retries errors it classifies as an SSH timeout; srun would only say
        "Job is pending execution", so the SLURM state and pending reason are reported here.
        """
        try:
            reason = self.not_ready()
        except NodeStartTimeout as exc:
            print(f"{self.log_prefix}{exc}", file=sys.stderr)
            raise command_failed(str(exc), "ssh_command_failed", command=self.job_id) from exc
        if reason:
            logger.info("%sjob %s is not running yet: %s", self.log_prefix, self.job_id, reason)
            print(f"{self.log_prefix}SLURM job {self.job_id}: {reason}", file=sys.stderr)
            raise command_failed(
                f"job {self.job_id} not running: {reason}", "ssh_command_failed",
                command=[self.srun, f"--jobid={self.job_id}"], special_case="ssh_timeout",
            )  # fmt: skip

    def wrap(self, argv: list[str]) -> list[str]:
        pty = ["--pty"] if sys.stdin.isatty() and sys.stdout.isatty() else []
        return [self.srun, f"--jobid={self.job_id}", "--overlap", "--nodes=1", "--ntasks=1",
                "--quiet", *pty, *argv]  # fmt: skip

    def remote_shell_command_str(self) -> str:
        return f"{self.srun} --jobid={self.job_id} --overlap --pty bash\n"


@dataclass(frozen=True)
class CommandContext:
    """What Ray's command runner for a node needs from the provider."""

    log_prefix: str
    process_runner: Any  # Ray's subprocess module stand-in
    stop_ray: Callable[[], None]  # `ray stop` on the node: stop this node only
    stop_cluster: Callable[[], None]  # `ray exec --stop`: the whole cluster, as `ray down`
    not_ready: Callable[[], str | None]  # why the node cannot run commands yet (None: it can)


def runner_options(cluster: ClusterDir, ctx: CommandContext) -> dict[str, Any]:
    """What every runner of the cluster gets, whichever backend's node it reaches: the
    cluster's token and address; ``~`` of Ray's own files is the cluster dir."""
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(cluster.token_file),
        "RAY_SLURM_CLUSTER_DIR": str(cluster.root),
    }
    head = cluster.head()
    if head:
        env["RAY_ADDRESS"] = head.address
        # Commands run on the head's host (the login node, or a step of the head's job): they
        # use the head node's own TLS certificate, issued for that host's addresses.
        env.update(tls.ray_env(Path(head.temp_dir).parent))
    return {
        "log_prefix": ctx.log_prefix,
        "home": str(cluster.root),
        "env": env,
        "stop_ray": ctx.stop_ray,
        "stop_cluster": ctx.stop_cluster,
        "process_runner": ctx.process_runner,
        "session_dir": head.session_dir if head else "",
        "dashboard": head.dashboard if head else "",
    }
