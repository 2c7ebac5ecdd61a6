"""What the provider learns from each listing: nodes that wait too long, nodes that ended before
Ray saw them, node types that fail and types that proved they work again.

The rules (how long to back off, one node at a time while a type fails) are ``policy``'s; this
keeps the per-node memory they need and writes each type's latest failure to the state file, so
that ``ray-slurm status`` (another process) shows why a type gets no new node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ray_slurm.backends.nodes import START_WINDOW_S, JobState, Node
from ray_slurm.cluster.policy import TypeBackoff
from ray_slurm.config import Settings
from ray_slurm.host.state import ClusterDir

logger = logging.getLogger(__name__)


class NodeWatch:
    def __init__(self, settings: Settings, cluster: ClusterDir, backoff: TypeBackoff) -> None:
        self.settings = settings
        self.cluster = cluster
        self.backoff = backoff
        self._reasons: dict[str, str] = {}  # node id -> the pending reason last logged
        self._running_since: dict[str, float] = {}  # node id -> first seen running (monotonic)
        self._unseen: dict[str, Node] = {}  # launched here, not yet shown to Ray

    # ------------------------------------------------------------ Ray's view

    def launched(self, node: Node) -> None:
        """A node this process launched: Ray must see it listed at least once (``ended``)."""
        self._unseen[node.node_id] = node

    def reported(self, node_ids: Iterable[str]) -> None:
        """Ray has seen these nodes listed."""
        for node_id in node_ids:
            self._unseen.pop(node_id, None)

    def ended_unseen(self, listed: dict[str, Node]) -> dict[str, Node]:
        """Nodes launched here that ended before Ray saw them listed, as ending nodes.

        Ray's autoscaler matches a launch to a node when it first sees the node; a job that dies
        within seconds would never be seen, and its launch would wait as "launching" for Ray's
        request timeout (600 s). Listed once as ending, the launch is matched, then ends at once.
        """
        return {
            node_id: replace(
                node, state=JobState.STOPPING, reason="ended before it was seen running"
            )
            for node_id, node in self._unseen.items()
            if node_id not in listed
        }

    # ------------------------------------------------------------ each listing

    def observe(self, nodes: dict[str, Node], created: dict[str, float]) -> list[tuple[Node, str]]:
        """Log why nodes wait, prove types whose nodes run; returns the workers that waited past
        their type's pending timeout, each with why it is given up (the core decides)."""
        now = time.monotonic()
        self._running_since = {i: t for i, t in self._running_since.items() if i in nodes}
        overdue = []
        for node in nodes.values():
            if node.state is JobState.RUNNING:
                since = self._running_since.setdefault(node.node_id, now)
                if now - since >= START_WINDOW_S and self.backoff.failing(node.node_type):
                    self._proven(node)
            if node.state is not JobState.PENDING:
                self._reasons.pop(node.node_id, None)
                continue
            if self._reasons.get(node.node_id) != node.reason:
                self._reasons[node.node_id] = node.reason
                logger.info("%s %s (node type %s) is pending: %s", node.what, node.node_id,
                            node.node_type, node.reason)  # fmt: skip
            waited = self.overdue(node, created.get(node.node_id))
            if node.kind == "worker" and waited is not None:
                overdue.append((node, f"{node.what} {node.node_id} waited {waited:.0f} s "
                                f"without starting ({node.reason}); it was removed"))  # fmt: skip
        return overdue

    def overdue(self, node: Node, created: float | None) -> float | None:
        """How long a node not yet running has waited, if past its type's pending timeout (the
        one rule for workers the autoscaler waits for and for a head `ray up` waits for)."""
        spec = self.settings.node_types.get(node.node_type)
        if node.state is JobState.RUNNING or spec is None:
            return None
        waited = time.time() - (created or time.time())
        return waited if waited > self.settings.pending_timeout(spec) else None

    def not_ready(self, node_id: str, node: Node | None, created: float | None,
                  ) -> tuple[str | None, bool]:  # fmt: skip
        """Why a node cannot run commands yet (None: it can), and whether it has waited past
        its type's pending timeout, so that whoever waits for it gives it up."""
        if node is None:
            return "the job no longer exists", False
        if node.state is JobState.RUNNING:
            return None, False
        waited = time.time() - (created or time.time())
        timeout = self.settings.pending_timeout(self.settings.spec(node.node_type))
        reason = f"{node.state.value} ({node.reason or 'no reason given'})"
        if self.overdue(node, created) is not None:
            return (
                f"SLURM job {node_id} (node type {node.node_type}) is still {reason} after "
                f"{waited:.0f} s (pending_timeout_s={timeout}); the job was cancelled"
            ), True
        return f"{reason}, waited {waited:.0f} of {timeout} s", False

    def unproven(self, node_type: str, nodes: dict[str, Node]) -> list[str]:
        """The type's nodes that have not yet run for START_WINDOW_S (pending ones included)."""
        now = time.monotonic()
        return [
            n.node_id
            for n in nodes.values()
            if n.node_type == node_type and n.kind == "worker"
            and now - self._running_since.get(n.node_id, now) < START_WINDOW_S
        ]  # fmt: skip

    # ------------------------------------------------------------ failures

    def type_failed(self, node_type: str, why: str, log: bool = True) -> float:
        """A node of the type could not be started: back off, and say so where users look.
        Returns the back-off delay (``log=False``: the caller logs it in its own words)."""
        delay = self.backoff.fail(node_type, why)
        if log:
            logger.warning("node type %s unavailable: %s; no new node of this type for %.0f s",
                           node_type, why, delay)  # fmt: skip
        with self.cluster.update() as state:
            failures: dict[str, Any] = state.setdefault("failures", {})
            previous = failures.get(node_type, {})
            failures[node_type] = {"why": why, "at": time.time(), "until": time.time() + delay,
                                   "count": previous.get("count", 0) + 1}  # fmt: skip
        return delay

    def _proven(self, node: Node) -> None:
        logger.info("node type %s works again: %s %s has run for %.0f s", node.node_type,
                    node.what, node.node_id, START_WINDOW_S)  # fmt: skip
        self.forget(node.node_type)

    def use_settings(self, settings: Settings) -> None:
        """`ray up` uploaded a new config: a type that changed is tried afresh."""
        for name, spec in settings.node_types.items():
            if self.settings.node_types.get(name) != spec and self.backoff.failing(name):
                logger.info("node type %s changed: its back-off is lifted", name)
                self.forget(name)
        logger.info("using the config `ray up` uploaded: node types %s",
                    ", ".join(sorted(settings.node_types)))  # fmt: skip
        self.settings = settings

    def forget(self, node_type: str) -> None:
        """The type works (or was changed): no back-off, no failure record."""
        self.backoff.succeed(node_type)
        with self.cluster.update() as state:
            state.get("failures", {}).pop(node_type, None)
