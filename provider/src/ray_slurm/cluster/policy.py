"""Decisions the provider takes when SLURM does not deliver: back off, give up, cap time limits.

Pure logic, kept apart from the provider so that each rule is readable and tested on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

BACKOFF_START_S = 30.0  # after SLURM refused or could not place a type, wait this long at first
BACKOFF_MAX_S = 600.0
HEAD_TIME_MARGIN_S = 60.0  # a worker's time limit ends this long before its head's
# Ray's own floor for nodes starting at once (``AUTOSCALER_UPSCALING_INITIAL_NUM_NODES``).
MIN_STARTING = 5
# A cluster config without ``upscaling_speed``: Ray's documented default (its v2 autoscaler's
# code falls back to 0.0, ``DEFAULT_UPSCALING_SPEED``; the site role always writes the field).
DEFAULT_UPSCALING_SPEED = 1.0


class LaunchRefused(RuntimeError):
    """A node type is not launched now; the message says why and until when."""


class TypeBackoff:
    """Per node type: after a failure, no new job of that type for a while (doubling per round),
    then one job at a time until one of them has run for ``START_WINDOW_S``.

    This is what keeps a rejected sbatch (bad partition, QOS limit), a type that never leaves the
    queue or a job that dies at start (a failing setup line) from turning into a retry storm: the
    autoscaler asks every few seconds, SLURM is asked at most once per back-off period. Jobs of
    one round fail together (a launch of five, all with the same bad setup line): failures while
    a back-off is in force do not double it again.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._why: dict[str, str] = {}

    def check(self, node_type: str) -> None:
        until = self._until.get(node_type)
        if until is not None and self._clock() < until:
            raise LaunchRefused(
                f"node type {node_type} is backed off for another "
                f"{until - self._clock():.0f} s: {self._why[node_type]}"
            )

    def allowed(self, node_type: str, count: int, unproven: Sequence[str]) -> int:
        """How many of ``count`` new nodes may be launched now; raises LaunchRefused for none.

        ``unproven``: the type's nodes that exist but have not yet run for START_WINDOW_S.
        """
        self.check(node_type)
        if node_type not in self._delay:
            return count
        if unproven:
            raise LaunchRefused(
                f"node type {node_type} failed recently ({self._why[node_type]}); "
                f"one node at a time until one starts: waiting for {', '.join(unproven)}"
            )
        return min(count, 1)

    def fail(self, node_type: str, why: str) -> float:
        """Record a failure; returns the back-off delay now in force."""
        now = self._clock()
        until = self._until.get(node_type)
        self._why[node_type] = why
        if until is not None and now < until:  # the same round
            return until - now
        previous = self._delay.get(node_type)
        delay = BACKOFF_START_S if previous is None else min(previous * 2, BACKOFF_MAX_S)
        self._delay[node_type] = delay
        self._until[node_type] = now + delay
        return delay

    def failing(self, node_type: str) -> bool:
        """Whether the type failed and has not proven itself since."""
        return node_type in self._delay

    def succeed(self, node_type: str) -> None:
        for table in (self._until, self._delay, self._why):
            table.pop(node_type, None)

    def backed_off(self) -> dict[str, str]:
        """Types backed off right now, with the reason: for status output."""
        now = self._clock()
        return {t: self._why[t] for t, until in self._until.items() if now < until}


def start_room(starting: int, joined: int, upscaling_speed: float) -> int:
    """How many more nodes of a type may start now: ``upscaling_speed`` as Ray documents it
    (nodes not yet in the Ray cluster at most that multiple of the type's nodes in it, and at
    least ``MIN_STARTING``).

    Ray's autoscaler v2 applies it only to launch requests not yet answered; a job is submitted
    in a second, so it would ask for ``upscaling_speed`` × joined new nodes every tick, and a
    scale-out of tens of nodes would have them all start together, each `ray start` racing
    Ray's fixed 30 s to register with a head that registers the others.
    """
    return max(0, max(MIN_STARTING, math.ceil(upscaling_speed * joined)) - starting)


def worker_time_limit_minutes(
    type_time_s: float | None, head_time_left_s: float | None
) -> int | None:
    """The ``--time`` (minutes) for a new worker so that it never outlives the head's job.

    None: no cap needed (the head has no limit, or the type's own limit ends first).
    """
    if head_time_left_s is None:
        return None
    cap_s = head_time_left_s - HEAD_TIME_MARGIN_S
    if cap_s < 60:
        raise LaunchRefused(
            f"the head's job ends in {head_time_left_s:.0f} s: no time left for a new worker"
        )
    if type_time_s is not None and type_time_s <= cap_s:
        return None
    return max(1, math.floor(cap_s / 60))
