"""The login backend: the head as a process tree on the login node (``head_mode: login``).

The head runs the same node script as a SLURM head (``jobscript``), started with ``bash`` in a
process group of its own instead of ``sbatch``; commands run on the login node itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_slurm.backends.base import LaunchRequest, Preview
from ray_slurm.backends.nodes import JobState, Node, Seen
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.backends.slurm.jobenv import clean_env
from ray_slurm.backends.slurm.jobscript import Identity, render
from ray_slurm.backends.slurm.nodemap import NodeAddresses
from ray_slurm.config import NodeTypeSpec, Settings
from ray_slurm.host.state import ClusterDir, write_private

if TYPE_CHECKING:
    from ray_slurm.backends.command_runner import CommandContext, LocalCommandRunner

logger = logging.getLogger(__name__)


def login_head_id() -> str:
    """The node id of a head that runs on the login node (it has no SLURM job id)."""
    return "login-head"


def login_identity(settings: Settings, cluster: ClusterDir) -> Identity:
    """How the login head's script names it: no job id, so its id is fixed, its ports are
    seeded by the cluster's directory and its temp dir carries a digest of it."""
    digest = hashlib.sha256(str(cluster.root).encode()).hexdigest()[:10]
    return Identity(sbatch=False, instance_id=shlex.quote(login_head_id()),
                    port_seed=shlex.quote(str(cluster.root)),
                    temp_template=shlex.quote(os.path.join(settings.temp_root,
                                                           f"rs-h{digest}.XXXXXX")))  # fmt: skip


class LoginBackend:
    """The head as a process tree on the login node, for ``head_mode: login``.

    Its pid, host and start time are kept in the state so that any later ``ray`` command on
    the same host can tell whether it still runs (pid reuse is caught by the start time).
    """

    name = "login"
    noun = "process"

    def __init__(self, settings: Settings, cluster: ClusterDir,
                 addresses: NodeAddresses | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.cluster = cluster
        slurm = Slurm(settings.slurm_bin, settings.slurm_timeout_s)
        self.addresses = addresses or NodeAddresses(slurm, settings.node_map)

    def _record(self) -> dict[str, Any] | None:
        """The head's process: as recorded, or found in the process table if the record is
        missing or stale (a `ray up` interrupted between starting it and recording it, a state
        file moved aside). Only a record of another login node is taken on trust."""
        record: dict[str, Any] | None = self.cluster.read_state().get("login_head")
        host = socket.gethostname()
        if record and (record["host"] != host or _alive(record["pid"], record["start_time"])):
            return record
        if self.settings.head_mode != "login":
            return None  # no login head to look for (and no /proc scan every tick)
        return _find_login_head(Path(self.cluster.jobs_dir))

    def list_nodes(self) -> Seen:
        record = self._record()
        if not record:
            return Seen([])
        return Seen([Node(login_head_id(), self.name, "head", record["node_type"],
                          JobState.RUNNING, record["host"], what=self.noun)])  # fmt: skip

    def launch(self, request: LaunchRequest) -> str:
        node_ip = self.addresses.login_ip(self.settings.head_ip)
        script = render(
            self.settings,
            self.cluster,
            request.spec,
            node_ip=node_ip,
            identity=login_identity(self.settings, self.cluster),
        )
        write_private(Path(script.path), script.text, 0o700)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = os.open(self.cluster.logs_dir / "head-login.log", flags, 0o600)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(
                ["bash", script.path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one, outlives ray up
                env=clean_env(),
                cwd=self.cluster.root,
                umask=0o077,
            )
        with self.cluster.update() as state:
            state["login_head"] = {
                "pid": proc.pid,
                "host": socket.gethostname(),
                "start_time": _start_time(proc.pid),
                "node_type": script.node_type,
            }
        return login_head_id()

    def terminate(self, node_ids: Sequence[str], grace_s: float = 30.0) -> None:
        record = self._record()
        if not record:
            return
        if record["host"] != socket.gethostname():
            raise RuntimeError(
                f"the head runs on login node {record['host']}: run this command there"
            )
        pid = record["pid"]
        if _alive(pid, record["start_time"]):
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while _alive(pid, record["start_time"]) and time.monotonic() < deadline:
                time.sleep(0.2)
            _signal_group(pid, signal.SIGKILL)  # whatever is left of the group
        with self.cluster.update() as state:
            state.pop("login_head", None)

    def drain(self, node_ids: Sequence[str]) -> None:
        """The login head has no end known in advance (no time limit): never drained."""

    def cleanup(self) -> None:
        """The head's process group is its only trace: nothing else to remove."""

    def address(self, node: Node) -> str:
        """The login node's address on the compute nodes' network (configured, or detected)."""
        return self.addresses.login_ip(self.settings.head_ip)

    def command_runner(self, node_id: str, ctx: CommandContext) -> LocalCommandRunner:
        """The login node runs commands itself."""
        # Imported only when Ray asks for a runner (it imports Ray): see SlurmBackend's.
        from ray_slurm.backends.command_runner import LocalCommandRunner, runner_options

        return LocalCommandRunner(**runner_options(self.cluster, ctx))

    def preview(self, spec: NodeTypeSpec, head_address: str) -> Preview:
        node_ip = self.settings.head_ip or "LOGIN_NODE_IP"
        script = render(
            self.settings,
            self.cluster,
            spec,
            node_ip=node_ip,
            identity=login_identity(self.settings, self.cluster),
        )
        return Preview(f"bash {script.path}", script.text, Path(script.path).name)


def _find_login_head(jobs_dir: Path) -> dict[str, Any] | None:
    """A login head of this cluster in the process table: a process of this user whose command
    line is exactly ``bash <jobs_dir>/head-<type>.sh`` and that leads its own process group (the
    script's subshells have the same command line, not the same pid)."""
    prefix = f"{jobs_dir}/head-".encode()
    uid = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
            pid = int(entry.name)
            leader = os.getpgid(pid) == pid
        except (OSError, ValueError):
            continue  # gone meanwhile
        if leader and len(argv) == 2 and argv[0] == b"bash" and argv[1].startswith(prefix):
            node_type = argv[1][len(prefix) :].decode(errors="replace").removesuffix(".sh")
            logger.info("found the login head (pid %d) from the process table", pid)
            return {"pid": pid, "host": socket.gethostname(), "start_time": _start_time(pid),
                    "node_type": node_type}  # fmt: skip
    return None


def _start_time(pid: int) -> str:
    """Process start time (clock ticks since boot), field 22 of /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start_time: str) -> bool:
    current = _start_time(pid)
    if not current or current != start_time:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
