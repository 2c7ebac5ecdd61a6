"""Act on new demand at once: the head's autoscaler loop wakes when a task waits for a node.

Ray's autoscaler (``monitor.py``: v2 as the head runs it, or v1) looks at demand only at the
start of each loop, then sleeps ``AUTOSCALER_UPDATE_INTERVAL_S``, which Ray reads as a whole
number of seconds: a task that needs a new worker waits half a second on average (up to a whole
one) before a job is even submitted. A shorter loop would cost the login node a full loop's CPU
(~19 ms per idle cluster) each time, for nothing most of the time. Instead, in the head's
autoscaler process only, the provider gives the loop's ``time`` a stand-in whose ``sleep`` asks
the GCS for the demand every ``demand_poll_ms`` (the cluster resource state, the call the loop
itself starts with) and ends as soon as some demand is there that was not when the sleep began.
Everything else is Ray's loop as it is.

So that demand that keeps changing (a busy cluster) cannot make the loop spin, a sleep ends early
only if the one before it did not: the loop runs at most twice per interval.

This relies on the shape of Ray 2.60's ``monitor.py`` (a module global ``time`` whose ``sleep``
ends each loop). Where it is not found, nothing is changed and the loop waits as Ray's does.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

Demand = Counter[Hashable]
GCS_TIMEOUT_S = 1  # a GCS slower than this: the sleep goes on as Ray's would
MONITOR_FILES = (os.path.join("autoscaler", "v2", "monitor.py"),
                 os.path.join("autoscaler", "_private", "monitor.py"))  # fmt: skip


def demand_of(state: Any) -> Demand:
    """The demand in the GCS's ``ClusterResourceState``, as the autoscaler reads it: pending
    requests per resource shape, pending placement groups, and ``request_resources`` asks."""
    demand: Demand = Counter()
    for pending in state.pending_resource_requests:
        demand[bundle(pending.request)] += pending.count
    for gang in state.pending_gang_resource_requests:
        demand[("placement_group", gang.details, tuple(bundle(r) for r in gang.requests))] += 1
    for constraint in state.cluster_resource_constraints:
        for asked in constraint.resource_requests:
            demand[("request_resources", bundle(asked.request))] += asked.count
    return demand


def bundle(request: Any) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(request.resources_bundle.items()))


def grew(before: Mapping[Hashable, int], after: Mapping[Hashable, int]) -> bool:
    """True when ``after`` asks for something ``before`` did not (a new shape, or more of one)."""
    return any(count > before.get(key, 0) for key, count in after.items())


class DemandAwareTime:
    """Stands in for the ``time`` module in Ray's monitor: ``sleep`` ends early on new demand;
    every other attribute is the real module's."""

    def __init__(self, poll: Callable[[], Demand], poll_s: float,
                 clock: Any = time) -> None:  # fmt: skip
        self._poll = poll
        self._poll_s = poll_s
        self._clock = clock
        self._woke_early = False
        self.early_wakes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clock, name)

    def sleep(self, seconds: float) -> None:
        clock = self._clock
        if self._woke_early or seconds <= self._poll_s:
            self._woke_early = False  # the loop runs at most twice per interval
            clock.sleep(seconds)
            return
        deadline = clock.monotonic() + seconds
        before = self._demand()
        while (left := deadline - clock.monotonic()) > 0:
            clock.sleep(min(self._poll_s, left))
            if before is None:
                before = self._demand()
                continue
            now = self._demand()
            if now is not None and grew(before, now):
                logger.info("new demand woke the autoscaler: %s", dict(now))
                self._woke_early = True
                self.early_wakes += 1
                return

    def _demand(self) -> Demand | None:
        """The GCS's demand now, or None if it cannot say (the loop then waits as Ray's would)."""
        try:
            return self._poll()
        except Exception as exc:  # a GCS that is busy or restarting: the next poll tries again
            logger.debug("cannot read the demand from the GCS: %s", exc)
            return None


def gcs_demand(gcs_address: Callable[[], str | None]) -> Callable[[], Demand]:
    """A poll of the GCS at ``gcs_address()`` (the head's, known once its job published it)."""
    client: Any = None

    def poll() -> Demand:
        nonlocal client
        if client is None:
            address = gcs_address()
            if not address:
                raise LookupError("the head has not published its address yet")
            # The autoscaler has Ray imported already. Compiled (Cython): no stubs.
            from ray._raylet import GcsClient  # type: ignore[attr-defined]

            client = GcsClient(address=address)
        from ray.core.generated.autoscaler_pb2 import (  # type: ignore[attr-defined]
            GetClusterResourceStateReply,
        )

        reply = GetClusterResourceStateReply()
        reply.ParseFromString(client.get_cluster_resource_state(timeout_s=GCS_TIMEOUT_S))
        return demand_of(reply.cluster_resource_state)

    return poll


def monitor_module() -> types.ModuleType | None:
    """Ray's autoscaler module, if this process is the head's autoscaler: Ray runs the file
    (v2's or v1's) as the process's main module."""
    module = sys.modules.get("__main__")
    path = getattr(module, "__file__", None) or ""
    return module if module is not None and path.endswith(MONITOR_FILES) else None


def install(poll: Callable[[], Demand], poll_ms: int) -> DemandAwareTime | None:
    """Make the running autoscaler's loop wake on new demand; None where it cannot (or
    ``poll_ms`` is 0), and the loop waits as Ray's does."""
    module = monitor_module()
    if poll_ms <= 0 or module is None:
        return None
    current = getattr(module, "time", None)
    if isinstance(current, DemandAwareTime):
        return current
    if current is not time:
        logger.warning("Ray's autoscaler loop is not the one this provider knows (no module "
                       "global 'time' in %s): new demand waits for its next loop",
                       module.__file__)  # fmt: skip
        return None
    stand_in = DemandAwareTime(poll, poll_ms / 1000)
    module.time = stand_in  # type: ignore[attr-defined]
    logger.info("the autoscaler acts on new demand within %d ms", poll_ms)
    return stand_in
