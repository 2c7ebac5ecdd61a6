"""Where Ray nodes live: the seam between the provider and the systems that run its nodes.

A backend launches nodes of a type, lists the ones that exist, terminates them and removes
what it created besides nodes. The provider keeps tags and talks to backends only through this
interface: the SLURM backend (one batch job per node), the login backend (the head as a process
on the login node) and the Kubernetes backend (``kube``: one pod per node).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ray_slurm.config import NodeTypeSpec, Settings
from ray_slurm.ended import FAILED_STATES, LOST_STATES, how_job_ended
from ray_slurm.jobscript import job_log, login_head_id, parse_job_name, render
from ray_slurm.slurm import Job, JobState, Slurm, clean_env, parse_duration
from ray_slurm.state import ClusterDir, write_private

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    """A node as its backend sees it right now."""

    node_id: str
    backend: str
    kind: str
    node_type: str
    state: JobState
    host: str = ""  # SLURM node name (or login host, or Kubernetes node) once placed
    reason: str = ""  # why it is pending, in the backend's words
    time_left: str = ""
    ip: str = ""  # the node's address when the backend knows it (a pod's IP)

    @property
    def time_left_s(self) -> float | None:
        """Seconds until the time limit; None without one (or while pending)."""
        if self.state is not JobState.RUNNING:
            return None
        try:
            return parse_duration(self.time_left)
        except ValueError:
            return None


@dataclass(frozen=True)
class LaunchRequest:
    """One node to start: its type and what it must know about the cluster."""

    spec: NodeTypeSpec
    head_address: str = ""  # workers: the head's GCS address
    node_ip: str = ""  # the login head: the address it listens on
    time_limit_minutes: int | None = None  # SLURM workers: end before the head's job does


class Backend(Protocol):
    name: str
    settings: Settings  # replaced when `ray up` uploads a new config to a running cluster

    def list_nodes(self) -> list[Node]:
        """Every node of this cluster the backend has (not the ones that are gone)."""
        ...

    def launch(self, request: LaunchRequest) -> str:
        """Start one node; returns its id. Raises BackendError if it could not."""
        ...

    def terminate(self, node_ids: Sequence[str]) -> None: ...

    def cleanup(self) -> None:
        """After `ray down`: remove whatever else the backend created for the cluster."""
        ...


# A job cancelled less than this long ago is not cancelled again: `ray down` (every 5 s) and the
# autoscaler ask again while a job drains (up to Ray's 30 s drain window), one scancel is enough.
RECANCEL_S = 60.0


class SlurmBackend:
    """Each node is one SLURM batch job named ``ray.<cluster>.<kind>.<type>``.

    ``on_failure(node_type, why)`` hears of every worker job this process launched or saw alive
    that then ended in failure through its own fault (``ended``): the provider backs the type
    off. Jobs that ended before this process watched them (a previous head's) are not reported.

    A job seen running that SLURM then requeues (same id, pending again) or suspends has lost
    its Ray node: it is cancelled, never re-adopted — a node started again under the same id
    would be a new Ray node under an old identity, counted twice while Ray forgets the old one.
    Jobs are submitted ``--no-requeue`` so that SLURM cancels rather than requeues them; this
    catches a site's or user's ``--requeue`` and an admin's ``scontrol requeue``.
    ``on_lost(job_ids)`` hears of such jobs and of running jobs that ended NODE_FAIL or
    PREEMPTED: their Ray processes may live on (``raynodes``).
    """

    name = "slurm"

    def __init__(
        self,
        settings: Settings,
        slurm: Slurm,
        cluster: ClusterDir,
        on_failure: Callable[[str, str], object] | None = None,
        on_lost: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.slurm = slurm
        self.cluster = cluster
        self.on_failure = on_failure
        self.on_lost = on_lost
        self._cancelled: dict[str, float] = {}  # job id -> when we cancelled it (monotonic)
        self._watched: set[str] = set()  # jobs launched or seen alive by this process
        self._ran: set[str] = set()  # jobs seen running by this process
        self._requeued: set[str] = set()  # of those, the ones pending again: being cancelled

    def list_nodes(self) -> list[Node]:
        """One squeue call for every job of this cluster (every state but terminal ones)."""
        nodes, lost, seen = [], [], set()
        for job in self.slurm.squeue():
            owner = parse_job_name(job.name, self.settings.cluster_name)
            if owner is None:
                continue
            kind, node_type = owner
            seen.add(job.job_id)
            if job.state is JobState.GONE:
                if job.job_id in self._watched:
                    self._watched.discard(job.job_id)
                    if self._ended(job, kind, node_type) and job.job_id in self._ran:
                        lost.append(job.job_id)
                self._ran.discard(job.job_id)
                continue
            self._watched.add(job.job_id)
            if job.state is JobState.RUNNING:
                self._ran.add(job.job_id)
            elif job.state is JobState.PENDING and job.job_id in self._ran | self._requeued:
                if job.job_id not in self._requeued:  # said once, even if Ray cancelled it first
                    self._requeued.add(job.job_id)
                    lost.append(job.job_id)
                    logger.warning("%s job %s (node type %s) was %s by SLURM after it ran (%s): "
                                   "its Ray node is gone; the job is cancelled, a new one "
                                   "replaces it if still needed", kind, job.job_id, node_type,
                                   "suspended" if job.slurm_state.startswith("SUSPENDED")
                                   else "requeued", job.reason)  # fmt: skip
                self.terminate([job.job_id])
                continue
            nodes.append(Node(job.job_id, self.name, kind, node_type, job.state, job.node,
                              job.reason, job.time_left))  # fmt: skip
        self._ran &= seen  # forget the jobs SLURM forgot
        self._requeued &= seen
        if lost and self.on_lost is not None:
            self.on_lost(lost)
        return nodes

    def _ended(self, job: Job, kind: str, node_type: str) -> bool:
        """A watched job ended: say how if it failed, and report a broken type. Returns whether
        its node was lost under it (its processes may outlive the job: NODE_FAIL, PREEMPTED)."""
        state = job.slurm_state.split()[0]
        # Ray may ask to cancel a job whose node it saw die (preempted, node failed) before
        # SLURM's verdict is in: only a FAILED after our own scancel is ours.
        if state not in FAILED_STATES or (state == "FAILED" and job.job_id in self._cancelled):
            return False
        log = job_log(self.cluster, self.settings.cluster_name, kind, node_type, job.job_id)
        end = how_job_ended(self.slurm, job.job_id, state, log)
        logger.warning("%s node of type %s: %s", kind, node_type, end.describe())
        if kind == "worker" and end.types_fault and self.on_failure is not None:
            self.on_failure(node_type, end.describe())
        return state in LOST_STATES

    def launch(self, request: LaunchRequest) -> str:
        script = render(self.settings, self.cluster, request.spec, request.head_address,
                        request.node_ip)  # fmt: skip
        write_private(Path(script.path), script.text, 0o700)
        extra_args = []
        if request.time_limit_minutes is not None:
            extra_args.append(f"--time={request.time_limit_minutes}")
        job_id = self.slurm.sbatch(script.path, extra_args)
        self._watched.add(job_id)
        return job_id

    def terminate(self, node_ids: Sequence[str]) -> None:
        """One scancel for all the jobs not already cancelled in the last RECANCEL_S."""
        now = time.monotonic()
        self._cancelled = {i: t for i, t in self._cancelled.items() if now - t < RECANCEL_S}
        fresh = [i for i in node_ids if i not in self._cancelled]
        if len(fresh) < len(node_ids):
            logger.info("already cancelled, still ending: %s",
                        ", ".join(i for i in node_ids if i in self._cancelled))  # fmt: skip
        if fresh:
            self.slurm.scancel(fresh)
            self._cancelled.update(dict.fromkeys(fresh, now))

    def cleanup(self) -> None:
        """Jobs are nodes: nothing else to remove."""


class LoginBackend:
    """The head as a process tree on the login node, for ``head_mode: login``.

    Its pid, host and start time are kept in the state so that any later ``ray`` command on
    the same host can tell whether it still runs (pid reuse is caught by the start time).
    """

    name = "login"

    def __init__(self, settings: Settings, cluster: ClusterDir) -> None:
        self.settings = settings
        self.cluster = cluster

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

    def list_nodes(self) -> list[Node]:
        record = self._record()
        if not record:
            return []
        return [Node(login_head_id(), self.name, "head", record["node_type"], JobState.RUNNING,
                     record["host"])]  # fmt: skip

    def launch(self, request: LaunchRequest) -> str:
        script = render(self.settings, self.cluster, request.spec, node_ip=request.node_ip)
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

    def cleanup(self) -> None:
        """The head's process group is its only trace: nothing else to remove."""


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
