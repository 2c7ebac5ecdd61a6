"""How a SLURM job ended: its state, exit code, node and run time, and the last lines of its log.

squeue tells that a job ended (SLURM keeps finished jobs for ``MinJobAge``, 300 s by default) but
not its exit code. For the few jobs that end on their own, this asks ``scontrol show job`` once,
and ``sacct`` where the site keeps accounting and the controller already forgot the job. What a
user reads (``ray-slurm status``, the autoscaler log) is ``JobEnd.describe()``: SLURM's words
plus the end of the job's own output, where a failing setup line shows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ray_slurm.backends.nodes import PORTS_TAKEN_EXIT, START_FAILED_EXIT, START_WINDOW_S
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.backends.slurm.formats import parse_duration

logger = logging.getLogger(__name__)

# End states that mean the job could not do its work. CANCELLED (scancel: idle scale-down,
# `ray down`, the user), COMPLETED (Ray ended: its head is gone) and TIMEOUT (the time limit, with
# notice) are the ends a cluster expects.
FAILED_STATES = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
# Of those, the ones that say nothing about the node type: the node or the scheduler ended the
# job. Its node is lost and replaced, but the type is not backed off for it.
NOT_THE_TYPES_FAULT = {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"}
# Ends that take the node from under a running job: its processes may live on for a while.
LOST_STATES = {"NODE_FAIL", "PREEMPTED"}

LOG_TAIL_LINES = 5
LOG_TAIL_BYTES = 4096


@dataclass(frozen=True)
class JobEnd:
    """One ended job as SLURM recorded it."""

    job_id: str
    state: str  # SLURM's end state: FAILED, OUT_OF_MEMORY, ...
    exit_code: str = ""  # "3:0" (code:signal)
    reason: str = ""
    node: str = ""
    run_time_s: float | None = None
    log_path: str = ""
    log_tail: tuple[str, ...] = ()

    @property
    def types_fault(self) -> bool:
        """Whether the job died at start of its own setup or Ray (the type is broken), not of
        its node or of another account that held one of its ports, and not after a working
        life (then it is only lost, and replaced at once)."""
        code = self.exit_code.partition(":")[0]
        early = (self.run_time_s is None or self.run_time_s < START_WINDOW_S
                 or code == str(START_FAILED_EXIT))  # fmt: skip
        ports_taken = code == str(PORTS_TAKEN_EXIT)
        return early and self.state not in NOT_THE_TYPES_FAULT and not ports_taken

    def describe(self) -> str:
        text = f"job {self.job_id} ended {self.state}"
        if self.exit_code:
            text += f" (exit code {self.exit_code})"
        if self.node:
            text += f" on {self.node}"
        if self.run_time_s is not None:
            text += f" after {self.run_time_s:.0f} s"
        if self.reason and self.reason not in ("None", "NonZeroExitCode"):
            text += f": {self.reason}"
        if self.log_tail:
            text += f"; last lines of {self.log_path}: " + " | ".join(self.log_tail)
        elif self.log_path:
            text += f"; its log {self.log_path} is empty or unreadable"
        return text


def parse_scontrol_job(text: str) -> dict[str, str]:
    """``scontrol show job -o ID``: one line of ``Key=Value`` pairs (values have no spaces,
    except the last ones such as ``Command``; only the leading keys are read)."""
    fields: dict[str, str] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def parse_sacct(text: str) -> dict[str, str]:
    """``sacct -j ID -X -n -P -o State,ExitCode,Reason,NodeList,ElapsedRaw`` (the job line)."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 5:
            state, exit_code, reason, node, elapsed = parts
            return {"JobState": state.split()[0], "ExitCode": exit_code, "Reason": reason,
                    "NodeList": node, "ElapsedRaw": elapsed}  # fmt: skip
    return {}


def how_job_ended(slurm: Slurm, job_id: str, state: str, log_path: str) -> JobEnd:
    """SLURM's record of an ended job (scontrol, else sacct), with the end of its log.

    ``state`` is what squeue said; it stands if SLURM has no more to tell.
    """
    fields = parse_scontrol_job(slurm.run(["scontrol", "show", "job", "-o", job_id],
                                          check=False).stdout)  # fmt: skip
    if fields.get("JobId") != job_id:
        fields = parse_sacct(slurm.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o",
                                        "State,ExitCode,Reason,NodeList,ElapsedRaw"],
                                       check=False).stdout)  # fmt: skip
    run_time = None
    try:
        if fields.get("RunTime"):
            run_time = parse_duration(fields["RunTime"])
        elif fields.get("ElapsedRaw", "").isdigit():
            run_time = float(fields["ElapsedRaw"])
    except ValueError:
        pass
    log_path = fields.get("StdOut") or log_path
    node = fields.get("NodeList", "")
    return JobEnd(
        job_id=job_id,
        state=fields.get("JobState") or state,
        exit_code=fields.get("ExitCode", ""),
        reason=fields.get("Reason", ""),
        node="" if node in ("(null)", "None") else node,
        run_time_s=run_time,
        log_path=log_path,
        log_tail=log_tail(log_path),
    )


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """The last non-empty lines of a job's log (read from its end: logs can be large)."""
    if not path:
        return ()
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            data = f.read().decode(errors="replace")
    except OSError as exc:
        logger.debug("cannot read %s: %s", path, exc)
        return ()
    kept = [line.rstrip() for line in data.splitlines() if line.strip()]
    return tuple(kept[-lines:])
