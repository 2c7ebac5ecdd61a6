"""Roll-over: no work lost to SLURM's clock. The rules and their arithmetic, on one screen.

A worker whose job has a time limit ends at a time known in advance (squeue's time left). For a
busy worker of a type whose ``rollover_lead_s`` is not 0, the timeline is::

    end - lead            the core queues a replacement job of the same type (if the type may
                          grow: its max_workers and the cluster's, no back-off)
    replacement joined    the old worker is drained: its job is signalled (USR1), and asks
    (at the latest:       Ray's GCS to drain its node with the deadline ``drain_deadline(end)``:
     end - warning)       Ray places no new work there, running tasks have until the deadline
    idle, or deadline     the job stops Ray and ends before SLURM's kill

A worker that is idle at ``end - lead`` gets no replacement (Ray would only idle it away); one
that is busy later in its lead still gets one. SLURM's own ``--signal=B:USR1@walltime_warning_s``
starts the drain where nothing else did (roll-over off, a replacement still queued, a type at
its maximum), and on a site with ``PreemptParameters=send_user_signal`` it comes at preemption
too: the job reads its new end (preemption time + GraceTime) from SLURM and drains by then.

Ray's drain reason for a node that will go away at a deadline is PREEMPTION (its only reason
besides idle termination); the message says which (time limit or preemption) and when.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ray_slurm.backends.nodes import DRAIN_STOP_MARGIN_S, JobState, Node
from ray_slurm.cluster.policy import HEAD_TIME_MARGIN_S
from ray_slurm.config import NodeTypeSpec, Settings

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

# The automatic lead (a type without ``rollover_lead_s``): the walltime warning plus twice the
# type's last observed start (submit -> joined), at least this long before one is observed.
DEFAULT_START_S = 120.0
START_FACTOR = 2.0
# A lead never takes more than this share of the job's time limit: a replacement queued at the
# start of its predecessor's life would double the cluster.
MAX_LEAD_SHARE = 0.5

REASON_TIME_LIMIT = "time limit"
REASON_PREEMPTION = "preemption"
DRAINING = "draining"  # (the GCS's word for a node that drains already)


def lead_s(spec: NodeTypeSpec, observed_start_s: float | None = None) -> float:
    """How long before a worker's end its replacement is queued; 0: roll-over off."""
    if spec.rollover_lead_s is not None:
        return float(spec.rollover_lead_s)
    start = DEFAULT_START_S if observed_start_s is None else START_FACTOR * observed_start_s
    lead = spec.walltime_warning_s + max(DEFAULT_START_S, start)
    if spec.time_s is not None:
        lead = min(lead, MAX_LEAD_SHARE * spec.time_s)
    return lead


def drain_deadline(end: float) -> float:
    """When a draining node's tasks must be done (epoch seconds): before the job's end."""
    return end - DRAIN_STOP_MARGIN_S


def due(end: float, lead: float, now: float) -> bool:
    """Whether a replacement for a node ending at ``end`` should be queued now."""
    return lead > 0 and now >= end - lead


def outlives(old_left_s: float, head_left_s: float | None, lead: float) -> bool:
    """Whether a replacement queued now would outlive the old worker by the lead: not when the
    head's own time limit (which caps every worker: ``policy.worker_time_limit_minutes``) ends
    the cluster about when the old worker ends."""
    if head_left_s is None:
        return True
    return head_left_s - HEAD_TIME_MARGIN_S - old_left_s >= lead


def clock(epoch: float) -> str:
    """A time of day for messages (the user's local time)."""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


@dataclass
class Rollover:
    """One worker being replaced, as the core follows it (and ``ray-slurm status`` shows it)."""

    node_id: str
    node_type: str
    end: float  # epoch seconds: the job's end (its time limit)
    replacement: str = ""  # the replacement's node id, once queued
    queued_at: float | None = None
    draining_from: float | None = None
    waiting: str = ""  # why no replacement is queued yet (said once per change)
    what: str = "job"  # what a node is to its backend (``Node.what``)

    def describe(self) -> str:
        """``worker 41 (cpu) ends at 12:30:00 (time limit): replacement job 57 queued at
        12:24:00, draining from 12:25:10``."""
        text = f"worker {self.node_id} ({self.node_type}) ends at {clock(self.end)} (time limit)"
        if self.replacement and self.queued_at is not None:
            text += (f": replacement {self.what} {self.replacement} queued at "
                     f"{clock(self.queued_at)}")  # fmt: skip
        elif self.waiting:
            text += f": no replacement yet, {self.waiting}"
        if self.draining_from is not None:
            text += f", draining from {clock(self.draining_from)}"
        return text

    def record(self) -> dict[str, object]:
        return {"node_type": self.node_type, "end": self.end, "replacement": self.replacement,
                "queued_at": self.queued_at, "draining_from": self.draining_from,
                "waiting": self.waiting, "what": self.what}  # fmt: skip


def drain_message(reason: str, job: str, end: float) -> str:
    """What Ray records as the drain's message (it shows in a task's NodeDiedError)."""
    if reason == REASON_PREEMPTION:
        return f"SLURM preempted job {job}: it is killed at {clock(end)}"
    return f"SLURM job {job} reaches its time limit at {clock(end)}"


@dataclass
class Plan:
    """What roll-over does after one listing: queue replacements, drain replaced workers."""

    replace: list[Node] = field(default_factory=list)
    drain: list[Node] = field(default_factory=list)
    changed: bool = False  # the records changed: write them for ``ray-slurm status``


def _once(ask: Callable[[], _T]) -> Callable[[], _T]:
    """Ask the GCS at most once per plan, and only if a rule needs the answer."""
    answer: list[_T] = []

    def get() -> _T:
        if not answer:
            answer.append(ask())
        return answer[0]

    return get


class RollOvers:
    """The workers being replaced, and each type's last observed start (submit -> joined)."""

    def __init__(self) -> None:
        self.records: dict[str, Rollover] = {}
        self.observed_start: dict[str, float] = {}

    def plan(self, settings: Settings, nodes: Mapping[str, Node], created: Mapping[str, float],
             now: float, max_workers: Mapping[str, int], max_total: int | None,
             backed_off: Collection[str], activity: Callable[[], dict[str, str] | None],
             joined: Callable[[], set[str] | None]) -> Plan:  # fmt: skip
        """``nodes``: a complete listing made at ``now``; ``activity`` and ``joined``: the GCS's
        view (``raynodes``), asked only when a worker is in its lead."""
        plan = Plan()
        activity, joined = _once(activity), _once(joined)
        for node_id in [i for i in self.records if i not in nodes]:
            del self.records[node_id]  # it ended (its job's news says how)
            plan.changed = True
        head_left = next((n.time_left_s for n in nodes.values() if n.kind == "head"), None)
        counts = Counter(n.node_type for n in nodes.values() if n.kind == "worker")
        for node in sorted(nodes.values(), key=lambda n: n.node_id):
            spec = settings.node_types.get(node.node_type)
            if (spec is None or not spec.batch or node.kind != "worker" or node.time_left_s is None
                    or node.state is not JobState.RUNNING):  # fmt: skip
                continue
            end = now + node.time_left_s
            lead = lead_s(spec, self.observed_start.get(spec.name))
            record = self.records.get(node.node_id)
            if record is None:
                if not due(end, lead, now):
                    continue
                record = Rollover(node.node_id, spec.name, end, what=node.what)
                self.records[node.node_id] = record
                plan.changed = True
            record.end = end
            if record.draining_from is not None:
                continue
            if record.replacement:
                plan.changed |= self._follow(record, nodes, created, now, joined, plan)
                if record.replacement:  # (else it ended before it joined: another one)
                    continue
            why = self._why_not(spec, node, head_left, lead, counts, max_workers, max_total,
                                backed_off, activity)  # fmt: skip
            if why == DRAINING:  # SLURM's warning or a preemption came first: Ray replaces it
                record.draining_from = now
                plan.changed = True
            elif why:
                if why != record.waiting:
                    record.waiting = why
                    plan.changed = True
                    logger.info("%s", record.describe())
            else:
                counts[spec.name] += 1
                plan.replace.append(node)
        return plan

    def _follow(self, record: Rollover, nodes: Mapping[str, Node], created: Mapping[str, float],
                now: float, joined: Callable[[], set[str] | None], plan: Plan) -> bool:  # fmt: skip
        """A replacement is queued: once it has joined, the old worker drains."""
        if record.replacement not in nodes:
            logger.warning("%s; the replacement ended before it joined", record.describe())
            record.replacement, record.queued_at = "", None
            return True
        ids = joined()
        if ids is None or record.replacement not in ids:
            return False
        self.observed_start[record.node_type] = now - created.get(record.replacement, now)
        record.draining_from = now
        plan.drain.append(nodes[record.node_id])
        return True

    @staticmethod
    def _why_not(spec: NodeTypeSpec, node: Node, head_left: float | None, lead: float,
                 counts: Mapping[str, int], max_workers: Mapping[str, int],
                 max_total: int | None, backed_off: Collection[str],
                 activity: Callable[[], dict[str, str] | None]) -> str:  # fmt: skip
        """Why no replacement is queued for ``node`` now ("": one is)."""
        assert node.time_left_s is not None
        if not outlives(node.time_left_s, head_left, lead):
            return "the head's own time limit ends the cluster first"
        if spec.name in backed_off:
            return f"node type {spec.name} is backed off"
        seen = activity()
        if seen is None:
            return "the GCS did not say whether it is busy (asked again next time)"
        if seen.get(node.node_id) == "draining":
            return DRAINING
        if seen.get(node.node_id) != "busy":
            return "it is idle: nothing to carry over"
        limit = max_workers.get(spec.name)
        if limit is not None and counts[spec.name] + 1 > limit:
            return f"node type {spec.name} is at its max_workers ({limit}): it waits for room"
        if max_total is not None and sum(counts.values()) + 1 > max_total:
            return f"the cluster is at its max_workers ({max_total}): it waits for room"
        return ""
