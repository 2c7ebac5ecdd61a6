"""slurmctld's per-user RPC rate limiter, as the provider sees it, and how it slows down.

Sites turn it on with ``SlurmctldParameters=rl_enable`` (SLURM 23.02+): each user gets a bucket
of RPCs (30 by default) refilled at a fixed rate (2 a second). A command that finds the bucket
empty is told to back off; since 23.11 the command then sleeps and retries by itself, so it never
fails and prints nothing — it only gets slow. Run with ``-v``, it says so on stderr
(``squeue: RPC rate limited 1 time(s). Sleeping then trying again.``, then 2, 3 … with as many
seconds of sleep), which is how the provider sees throttling: its ``squeue``, ``sbatch`` and
``scancel`` run with ``-v`` where the release has the limiter. A command that is being throttled
is not hung — slurmctld answers it — so it is not killed at ``slurm_timeout_s`` while it keeps
being refused (``Slurm.run``, up to ``THROTTLED_MAX_S``), and a launch that still gives up is not
the node type's fault. ``Pace`` turns what the commands printed into how much longer to wait
between listings — doubled after each throttled command (at most ``MAX_FACTOR`` times the
configured ``squeue_interval_s``), and after each one that was not the rate grows back by an
eighth of the configured rate (``RECOVERY``) — so several clusters of one user share the bucket
instead of draining it in a storm. One user's clusters each pace
themselves; nothing is coordinated between processes.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

SINCE = (23, 2)  # the first SLURM release with rl_enable
MAX_FACTOR = 8.0
# How long in all a command that slurmctld keeps throttling may wait before it is given up (SLURM's
# own clients never give up): at the default bucket a starved client is refused about once a
# second more slowly each time, so this is tens of refusals.
THROTTLED_MAX_S = 600.0
# After a command that was not throttled the listing rate grows back by this share of the
# configured rate (halved at once after one that was): a user's ten clusters at rest stay under
# the budget longer between throttles, which leaves room for the user's own commands (halving
# the factor back went from 8 to 1 in three listings, and to the budget's edge).
RECOVERY = 0.125
_LIMITED = re.compile(r"RPC rate limited (\d+) time")
# squeue -v prints its options and then this line to stdout before the jobs.
_VERBOSE_END = re.compile(r"^last_update_time=\d+ records=\d+$", re.M)


def verbose(version: tuple[int, int, int]) -> bool:
    """Whether to run SLURM's commands with ``-v`` (a release that may throttle them)."""
    return version >= SINCE


def jobs_part(stdout: str) -> str:
    """The jobs of ``squeue -v`` output: what follows its options dump."""
    ends = list(_VERBOSE_END.finditer(stdout))
    return stdout[ends[-1].end() :].lstrip("\n") if ends else stdout


def count(stderr: str | bytes | None) -> int:
    """How often a command run with ``-v`` says slurmctld made it wait: one line per refusal
    (the client numbers the refusals of one RPC, 1, 2, 3 …, and sleeps that many seconds)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return len(_LIMITED.findall(stderr or ""))


class Pace:
    """How many times longer than configured the provider waits between listings."""

    def __init__(self) -> None:
        self.factor = 1.0
        self.throttled = 0  # times slurmctld made one of our commands wait
        self.throttled_calls = 0  # commands that waited at least once

    def saw(self, command: str, stderr: str | bytes | None) -> int:
        """Account for one command's stderr; returns how often it was made to wait."""
        waits = count(stderr)
        before = self.factor
        if waits:
            self.throttled += waits
            self.throttled_calls += 1
            self.factor = min(MAX_FACTOR, self.factor * 2)
        else:  # the listing rate grows back by an eighth of the configured rate at a time
            self.factor = max(1.0, 1 / (1 / self.factor + RECOVERY))
        if waits and self.factor == before:  # already as slow as it goes: still one line each
            logger.info("slurmctld's RPC rate limiter made %s wait %d time(s): still listing %g "
                        "times less often", command, waits, self.factor)  # fmt: skip
        elif self.factor != before:
            if waits:
                logger.warning(
                    "slurmctld's RPC rate limiter made %s wait %d time(s) (the user's clusters "
                    "and commands share one budget): listing %g times less often",
                    command, waits, self.factor,
                )  # fmt: skip
            else:
                logger.info("slurmctld no longer throttles %s: listing %g times less often",
                            command, self.factor)  # fmt: skip
        return waits
