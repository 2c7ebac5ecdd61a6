"""The SLURM command-line wrapper: the one place that runs SLURM commands and parses their output.

Every call has a timeout (a stuck slurmctld must not hang the autoscaler), runs with an explicit
output format (a user's ``SQUEUE_FORMAT`` cannot change what we parse) and with a clean environment
(the ``SLURM_*`` variables of an enclosing job, e.g. the head's own job, must not leak into sbatch).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO

from ray_slurm.backends.errors import BackendBusy, BackendError
from ray_slurm.backends.nodes import JobState
from ray_slurm.backends.slurm import ratelimit
from ray_slurm.backends.slurm.jobenv import clean_env
from ray_slurm.backends.slurm.partitions import Partition, parse_sinfo_partitions
from ray_slurm.host.private import user_name

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0


class SlurmError(BackendError):
    """A SLURM command failed; the message carries SLURM's own words."""


class Throttled(SlurmError, BackendBusy):
    """slurmctld's rate limiter kept refusing a command until it was given up."""


# Every state squeue can print (Slurm 22.05 ``%T``), mapped to what it means for us.
_STATE_MAP = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,
    "RESIZING": JobState.PENDING,
    "SUSPENDED": JobState.PENDING,
    "STOPPED": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.STOPPING,
    "SIGNALING": JobState.STOPPING,
    "STAGE_OUT": JobState.STOPPING,
    "UPDATE_DB": JobState.STOPPING,
    "POWER_UP_NODE": JobState.PENDING,
    "COMPLETED": JobState.GONE,
    "CANCELLED": JobState.GONE,
    "FAILED": JobState.GONE,
    "TIMEOUT": JobState.GONE,
    "NODE_FAIL": JobState.GONE,
    "PREEMPTED": JobState.GONE,
    "BOOT_FAIL": JobState.GONE,
    "DEADLINE": JobState.GONE,
    "OUT_OF_MEMORY": JobState.GONE,
    "REVOKED": JobState.GONE,
}


def job_state(slurm_state: str) -> JobState:
    """Map a squeue state; an unknown state is treated as alive so that no job is ever forgotten."""
    state = _STATE_MAP.get(slurm_state.split()[0].rstrip("+") if slurm_state else "")
    if state is None:
        logger.warning("Unknown SLURM job state %r: treating the job as still pending", slurm_state)
        return JobState.PENDING
    return state


@dataclass(frozen=True)
class Job:
    """One line of squeue."""

    job_id: str
    name: str
    slurm_state: str
    node: str  # first node of the allocation, "" while pending
    time_left: str
    reason: str

    @property
    def state(self) -> JobState:
        return job_state(self.slurm_state)


@dataclass(frozen=True)
class SlurmNode:
    """One node as SLURM knows it: its name and the address SLURM itself uses to reach it."""

    name: str
    addr: str
    hostname: str


# The separator cannot appear in the fields before the job name; the name comes last but one and
# the reason (SLURM's own words, no "|") last, so a user's job named "a|b" still parses.
_SQUEUE_FORMAT = "%i|%T|%N|%L|%j|%r"


def parse_squeue(text: str) -> list[Job]:
    """Parse ``squeue --noheader -o _SQUEUE_FORMAT`` output."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 4)
        if len(parts) != 5 or "|" not in parts[4]:
            raise SlurmError(f"cannot parse squeue line {line!r}")
        job_id, state, nodelist, time_left, rest = parts
        name, reason = rest.rsplit("|", 1)
        jobs.append(
            Job(
                job_id=job_id.strip(),
                name=name,
                slurm_state=state.strip(),
                node=first_node(nodelist.strip()),
                time_left=time_left.strip(),
                reason="" if reason.strip() == "None" else reason.strip(),
            )
        )
    return jobs


def first_node(nodelist: str) -> str:
    """First host of a SLURM nodelist (``n[1-3],m2`` -> ``n1``); our jobs use one node each."""
    if not nodelist or nodelist in ("(null)", "None"):
        return ""
    head = nodelist.split(",")[0]
    if "[" not in head:
        return head
    prefix, ranges = head.split("[", 1)
    first = ranges.split(",")[0].split("-")[0].rstrip("]")
    return prefix + first


def parse_sbatch(text: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    job_id = text.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id: {text.strip()!r}")
    return job_id


# The SLURM releases the provider is tested on (the harness's two sites); see docs/admin-guide.md.
TESTED_RELEASES = ("22.05", "24.11")


def parse_version(text: str) -> tuple[int, int, int]:
    """``sinfo -V`` (``slurm 22.05.8``, ``slurm-wlm 24.11.5``) as ``(24, 11, 5)``."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise SlurmError(f"sinfo -V printed no SLURM version: {text.strip()!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def parse_sinfo_nodes(text: str) -> dict[str, SlurmNode]:
    """Parse ``sinfo -N --noheader -o '%N|%o|%n'`` (a node in several partitions appears twice)."""
    nodes = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3:
            raise SlurmError(f"cannot parse sinfo line {line!r}")
        nodes[parts[0]] = SlurmNode(name=parts[0], addr=parts[1], hostname=parts[2])
    return nodes


def _said(args: Sequence[str], stderr: str) -> list[str]:
    """What a failed command said: its error lines under ``-v`` (not the options dump that -v
    prints before them), else every line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return [ln for ln in lines if "error" in ln.lower()] if "-v" in args else lines


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


class Slurm:
    """Runs SLURM's commands. ``bin_dir`` lets a site point at its own SLURM installation."""

    def __init__(self, bin_dir: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.bin_dir = bin_dir
        self.timeout_s = timeout_s
        self.calls = 0  # counted so that benchmarks and tests can see the cost per tick
        self._version: tuple[int, int, int] | None = None
        self._federated: bool | None = None
        self.pace = ratelimit.Pace()  # slurmctld's rate limiter as the listing's squeue saw it

    def command(self, name: str) -> str:
        return os.path.join(self.bin_dir, name) if self.bin_dir else name

    def run(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one SLURM command. It is killed after ``timeout_s`` unless slurmctld's rate limiter
        refused it again meanwhile (``-v``): then it is answered, only made to wait, and gets
        another ``timeout_s``, up to ``ratelimit.THROTTLED_MAX_S`` in all. Killing it would not
        help: it would start over and spend another RPC of the user's budget."""
        argv = [self.command(args[0]), *args[1:]]
        self.calls += 1
        logger.debug("running %s", argv)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:  # (sbatch hands its umask to the job: its output file is 0600)
                proc = subprocess.Popen(argv, stdout=out, stderr=err, env=clean_env(),
                                        stdin=subprocess.DEVNULL,
                                        umask=0o077)  # fmt: skip
            except FileNotFoundError as exc:
                raise SlurmError(f"{argv[0]} not found: is SLURM installed and on PATH?") from exc
            self._wait(proc, args[0], err)
            stdout, stderr = _read(out), _read(err)
        if "-v" in args:  # a release with the limiter: what it said paces the listing
            self.pace.saw(args[0], stderr)
        if check and proc.returncode != 0:
            message = "\n".join(_said(args, stderr)) or stdout.strip()
            raise SlurmError(f"{args[0]} failed: {message or f'exit code {proc.returncode}'}")
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    def _wait(self, proc: subprocess.Popen[bytes], name: str, err: IO[bytes]) -> None:
        started = time.monotonic()
        deadline, refused = started + self.timeout_s, 0
        while True:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                return
            except subprocess.TimeoutExpired:
                now, before = time.monotonic(), refused
                refused = ratelimit.count(_read(err))
                if refused > before and now - started < ratelimit.THROTTLED_MAX_S:
                    # after its nth refusal SLURM's client sleeps n s before it asks again
                    deadline = now + self.timeout_s + refused
                    continue
                proc.kill()
                proc.wait()
            stderr = _read(err)
            waited = now - started
            if not refused:
                raise SlurmError(f"{name} did not answer within {self.timeout_s:g} s")
            self.pace.saw(name, stderr)
            raise Throttled(f"{name} gave up after {waited:.0f} s: slurmctld's RPC rate limiter "
                            f"made it wait {refused} time(s) (the user's commands and clusters "
                            "share one budget)")  # fmt: skip

    def user(self) -> str:
        return user_name()

    def squeue(self, user: str | None = None) -> list[Job]:
        """All jobs of the user, in every state, with one call."""
        args = ["squeue", "--noheader", "--states=all", f"--user={user or self.user()}",
                f"--format={_SQUEUE_FORMAT}", *self._verbose(),
                *([] if self.federated() else ["--local"])]  # fmt: skip
        proc = self.run(args)
        return parse_squeue(ratelimit.jobs_part(proc.stdout) if "-v" in args else proc.stdout)

    def sbatch(self, script_path: str, extra_args: Iterable[str] = ()) -> str:
        """Submit; options in ``extra_args`` override the script's own #SBATCH lines."""
        proc = self.run(["sbatch", "--parsable", *self._verbose(), *extra_args, script_path])
        return parse_sbatch(proc.stdout)

    def scancel(self, job_ids: Sequence[str], signal: str | None = None, batch: bool = False,
                ) -> None:  # fmt: skip
        """Cancel (or ``signal``) many jobs with one call; jobs that already ended are not an
        error. ``batch``: signal only the job's script (``--batch``), not Ray under it.

        ``--user`` makes SLURM act only on the user's own jobs: a job id from a stale state file,
        since recycled for someone else's job, is left alone even where the user is an operator.
        """
        if not job_ids:
            return
        args = ["scancel", f"--user={self.user()}", *self._verbose()]
        if signal:
            args.append(f"--signal={signal}")
        if batch:
            args.append("--batch")
        proc = self.run([*args, *job_ids], check=False)
        if proc.returncode != 0:
            # (24.11's -v adds "No active jobs match": none of them is still alive)
            benign = ("Invalid job id", "already completing", "Job/step already completing",
                      "No active jobs match")  # fmt: skip
            lines = _said(args, proc.stderr)
            if not lines or any(not any(b in ln for b in benign) for ln in lines):
                raise SlurmError(f"scancel failed: {' '.join(lines) or proc.returncode}")

    def federated(self) -> bool:
        """Whether the site's cluster is in a SLURM federation, asked once (one RPC).

        Outside one, ``squeue --local`` lists the same jobs and spares the federation lookup that
        squeue otherwise makes on every call (one RPC of its three). In one, a job may run on a
        sibling cluster while this one keeps a revoked copy: the federated view is the truth.
        Unknown counts as federated."""
        if self._federated is None:
            self._federated = True
            try:
                self._federated = bool(self.run(["scontrol", "show", "federation"]).stdout.strip())
            except SlurmError as exc:
                logger.info("whether SLURM is federated is unknown, listing as it is: %s", exc)
        return self._federated

    def _verbose(self) -> list[str]:
        """``-v`` where slurmctld may rate-limit the user: how the provider sees throttling."""
        return ["-v"] if ratelimit.verbose(self.version()) else []

    def version(self) -> tuple[int, int, int]:
        """The release of the site's SLURM clients, asked once (``sinfo -V`` is no RPC, and is not
        counted in ``calls``); ``(0, 0, 0)`` if they do not say."""
        if self._version is None:
            self._version = (0, 0, 0)
            try:
                self._version = parse_version(self.run(["sinfo", "-V"]).stdout)
            except SlurmError as exc:
                logger.info("SLURM's release unknown: %s", exc)
            finally:
                self.calls -= 1
        return self._version

    def nodes(self) -> dict[str, SlurmNode]:
        proc = self.run(["sinfo", "-N", "--noheader", "--format=%N|%o|%n"])
        return parse_sinfo_nodes(proc.stdout)

    def partitions(self) -> dict[str, Partition]:
        """Every partition, its availability and the shapes of its nodes, with one call."""
        proc = self.run(["sinfo", "--noheader", "--format=%P|%a|%c|%m|%G|%t"])
        try:
            return parse_sinfo_partitions(proc.stdout)
        except ValueError as exc:
            raise SlurmError(str(exc)) from None

    def node(self, name: str) -> SlurmNode:
        """One node by name (from inside a job: ``$SLURMD_NODENAME``)."""
        proc = self.run(["sinfo", "-N", "--noheader", f"--nodes={name}", "--format=%N|%o|%n"])
        nodes = parse_sinfo_nodes(proc.stdout)
        if name not in nodes:
            raise SlurmError(f"SLURM does not know node {name!r}")
        return nodes[name]
