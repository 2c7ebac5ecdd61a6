"""The cluster core: what the backends saw, turned into decisions, carried out through their verbs.

Backends only look and report (``nodes.Seen``); the listing hands each listing's news to the
core once, in the provider's own call (never in the listing's thread). ``decide`` reads the
news and the core's memory (``watch``: back-offs, pending reasons, nodes not yet shown to Ray)
and returns ``Decisions``; ``carry_out`` acts on them with the backends' ``terminate``, the
state file, the head's GCS and the autoscaling config. The decisions:

* a node that ended badly: say how; back its type off if it failed at start through the type;
  stop its Ray node through the GCS if it was lost under it (only the head's autoscaler talks
  to the GCS: ``raynodes``);
* what is left of nodes that are no longer nodes (a requeued job, an ended pod): removed;
* a worker pending past its type's ``pending_timeout_s``: its type is backed off, it is removed;
* the types that must not grow now (``burst``): written to the autoscaling config the head's
  autoscaler reads;
* roll-over (``rollover``): a replacement queued for a busy worker whose time limit nears, and
  that worker drained once its replacement has joined.

``launch`` and ``terminate`` are the one way the provider starts and ends nodes (Ray's
requests, ``ray down``, a head that waited too long for ``ray up``, a replacement).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ray_slurm import config
from ray_slurm.backends.base import Backend, LaunchRequest
from ray_slurm.backends.errors import BackendBusy, BackendError
from ray_slurm.backends.nodes import Ended, JobState, Node
from ray_slurm.cluster import burst, raynodes
from ray_slurm.cluster.policy import LaunchRefused, worker_time_limit_minutes
from ray_slurm.cluster.rollover import Plan, RollOvers
from ray_slurm.cluster.watch import NodeWatch
from ray_slurm.config import ConfigError, NodeTypeSpec, Settings
from ray_slurm.host.state import ClusterDir

logger = logging.getLogger(__name__)


@dataclass
class News:
    """What one listing taught, handed to the core once (``Listing.news``)."""

    nodes: dict[str, Node]
    created: dict[str, float]  # node id -> when it was launched (time.time())
    complete: bool  # every backend answered: a node that is absent is gone
    ended: list[Ended] = field(default_factory=list)
    leftovers: dict[str, list[str]] = field(default_factory=dict)  # backend -> ids
    tags: dict[str, dict[str, str]] = field(default_factory=dict)  # node id -> Ray's tags
    at: float = field(default_factory=time.time)  # when the listing was made


@dataclass
class Decisions:
    """What the core will do about one listing's news."""

    told: list[Ended] = field(default_factory=list)  # ends to log, in the backend's words
    back_off: list[tuple[str, str]] = field(default_factory=list)  # (node type, why)
    remove: dict[str, list[str]] = field(default_factory=dict)  # backend -> node ids
    drain: list[str] = field(default_factory=list)  # node ids whose Ray nodes the GCS stops
    held: dict[str, int] | None = None  # types held at their size; None: nothing to write
    rollover: Plan = field(default_factory=Plan)  # replacements to queue, workers to drain


class Core:
    """Decides on what was seen and carries it out; the provider asks it to end nodes too."""

    def __init__(
        self,
        settings: Settings,
        cluster: ClusterDir,
        backends: Mapping[str, Backend],
        watch: NodeWatch,
        autoscaling: burst.AutoscalingConfig | None,
        lock: threading.RLock | None = None,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.backends = backends
        self.watch = watch
        # The head's autoscaler alone holds the autoscaling config, drains through the GCS and
        # follows the config that `ray up` uploads.
        self.autoscaling = autoscaling
        self.held: dict[str, int] = {}
        self.terminated: set[str] = set()  # nodes this process ended (may still be listed)
        self.rollovers = RollOvers()
        self.lock = lock or threading.RLock()  # the listing's: a launch is recorded under it
        self._followed: dict[str, Any] | None = None  # the uploaded config settings are from

    # ------------------------------------------------------------------ deciding

    def decide(self, news: News) -> Decisions:
        decisions = Decisions(told=list(news.ended))
        for end in news.ended:
            if end.types_fault:
                decisions.back_off.append((end.node.node_type, end.why))
            if end.lost and self.autoscaling is not None:
                decisions.drain.append(end.node.node_id)
        for name, ids in news.leftovers.items():
            decisions.remove.setdefault(name, []).extend(ids)
        if news.complete:
            for node, why in self.watch.observe(news.nodes, news.created):
                decisions.back_off.append((node.node_type, why))
                decisions.remove.setdefault(node.backend, []).append(node.node_id)
            backing_off = {node_type for node_type, _ in decisions.back_off}
            decisions.held = self._held(news.nodes, backing_off)
            decisions.rollover = self._rollover(news, backing_off)
        return decisions

    def _rollover(self, news: News, backing_off: set[str]) -> Plan:
        """Roll-over (``rollover``): in the head's autoscaler, which alone asks the GCS."""
        head = self.cluster.head()
        bootstrap = self._followed  # (read by ``_held``): no replacement without its limits
        if self.autoscaling is None or head is None or bootstrap is None:
            return Plan()
        total = bootstrap.get("max_workers")
        return self.rollovers.plan(
            self.settings, news.nodes, news.created, news.at, burst.max_workers_of(bootstrap),
            None if total is None else int(total),
            set(self.watch.backoff.backed_off()) | backing_off,
            lambda: raynodes.activity(head.address), lambda: raynodes.joined(head.address),
        )  # fmt: skip

    def _held(self, nodes: Mapping[str, Node], backing_off: set[str]) -> dict[str, int] | None:
        """The burst policy (``burst``): the worker types that must not grow now, with those
        this listing backs off."""
        if self.autoscaling is None:
            return None
        try:
            bootstrap = self.autoscaling.bootstrap()
        except (OSError, yaml.YAMLError) as exc:
            logger.error("cannot read %s: %s", self.autoscaling.bootstrap_path, exc)
            return None
        if bootstrap is not self._followed:
            self._follow(bootstrap)
        counts = Counter(n.node_type for n in nodes.values() if n.kind == "worker")
        return burst.limits(self.settings, burst.max_workers_of(bootstrap), counts,
                            set(self.watch.backoff.backed_off()) | backing_off)  # fmt: skip

    def _follow(self, bootstrap: dict[str, Any]) -> None:
        """`ray up` on a running cluster uploaded a new config: the autoscaler reads it from its
        next loop on, so new nodes are made from it too (a changed type starts afresh)."""
        self._followed = bootstrap
        try:
            settings = config.load_settings(bootstrap["provider"], self.settings.cluster_name)
        except (ConfigError, KeyError, TypeError) as exc:
            logger.error("keeping the previous node types: the uploaded config is not usable: %s",
                         exc)  # fmt: skip
            return
        if settings != self.settings:
            self.watch.use_settings(settings)
            self.settings = settings
            for backend in self.backends.values():
                backend.settings = settings

    # ------------------------------------------------------------------ acting

    def carry_out(self, decisions: Decisions) -> None:
        for end in decisions.told:
            if end.failed:
                logger.warning("%s node of type %s: %s", end.node.kind, end.node.node_type,
                               end.why)  # fmt: skip
            else:
                logger.warning("%s", end.why)
        for node_type, why in decisions.back_off:
            self.watch.type_failed(node_type, why)
        for name, ids in decisions.remove.items():
            self.backends[name].terminate(ids)
        if decisions.drain:
            head = self.cluster.head()
            if head is not None:
                raynodes.stop_ray_nodes(head.address, decisions.drain)
        if decisions.held is not None and self.autoscaling is not None:
            self.held = decisions.held
            try:
                self.autoscaling.update(self.held)
            except (OSError, yaml.YAMLError) as exc:
                logger.error("cannot update %s: %s", self.autoscaling.path, exc)

    def roll_over(self, plan: Plan, news: News) -> list[str]:
        """Queue the replacements and drain the replaced workers; returns the new node ids."""
        launched = []
        for node in plan.replace:
            record = self.rollovers.records[node.node_id]
            spec = self.settings.spec(node.node_type)
            head = self.cluster.head()
            try:
                minutes = worker_time_limit_minutes(spec.time_s, head_time_left(news.nodes))
                request = LaunchRequest(spec, head.address if head else "", minutes)
                [new] = self.launch(spec, news.tags.get(node.node_id, {}), request, 1)
            except LaunchRefused as exc:
                record.waiting = f"the replacement could not be queued: {exc}"
                logger.warning("%s", record.describe())
                continue
            record.replacement, record.queued_at, record.waiting = new, time.time(), ""
            logger.info("%s", record.describe())
            launched.append(new)
        by_backend: dict[str, list[str]] = {}
        for node in plan.drain:
            by_backend.setdefault(node.backend, []).append(node.node_id)
            logger.info("%s", self.rollovers.records[node.node_id].describe())
        for name, ids in by_backend.items():
            try:
                self.backends[name].drain(ids)
            except BackendError as exc:  # SLURM's own warning drains them later
                logger.warning("could not tell %s to drain now: %s", ", ".join(ids), exc)
        if plan.changed or plan.replace or plan.drain:
            with self.cluster.update() as state:
                state["rollovers"] = {i: r.record() for i, r in self.rollovers.records.items()}
        return launched

    def settle(self, news: News) -> list[str]:
        """Decide on one listing's news and carry it out; returns the nodes it launched."""
        decisions = self.decide(news)
        self.carry_out(decisions)
        return self.roll_over(decisions.rollover, news)

    def launch(self, spec: NodeTypeSpec, tags: dict[str, str], request: LaunchRequest,
               count: int) -> list[str]:  # fmt: skip
        """Start ``count`` nodes of a type, each recorded in the state as soon as it exists;
        returns their ids. A launch that fails raises LaunchRefused (BackendBusy: not the type's
        fault, no back-off) or BackendError (the type is backed off), after the ones that
        succeeded were recorded."""
        backend = self.backends[spec.backend]
        launched = []
        for _ in range(count):
            try:
                node_id = backend.launch(request)
            except BackendBusy as exc:  # not the type's fault: Ray asks again, no back-off
                logger.warning("node type %s: not launched this time: %s", spec.name, exc)
                raise LaunchRefused(f"node type {spec.name}: {exc}") from exc
            except BackendError as exc:
                delay = self.watch.type_failed(spec.name, str(exc), log=False)
                logger.error("node type %s: %s (no new job of this type for %.0f s)",
                             spec.name, exc, delay)  # fmt: skip
                raise LaunchRefused(f"node type {spec.name}: {exc}") from exc
            # Recorded one by one: a later failure must not lose the jobs already submitted.
            with self.lock, self.cluster.update() as state:
                state["nodes"][node_id] = {"backend": backend.name, "created": time.time(),
                                           "tags": dict(tags)}  # fmt: skip
                self.watch.launched(Node(node_id, backend.name, spec.kind, spec.name,
                                         JobState.PENDING, what=backend.noun))  # fmt: skip
            launched.append(node_id)
            logger.info("launched %s node %s of type %s", spec.backend, node_id, spec.name)
        return launched

    def terminate(self, node_ids: list[str], nodes: Mapping[str, Node]) -> None:
        """One call per backend for all the listed nodes among ``node_ids`` (one scancel for any
        number of jobs); workers before heads, backends with workers first."""
        by_backend: dict[str, list[str]] = {}
        heads_last = sorted((i for i in node_ids if i in nodes),
                            key=lambda i: nodes[i].kind == "head")  # fmt: skip
        for node_id in heads_last:
            by_backend.setdefault(nodes[node_id].backend, []).append(node_id)
        for name, ids in by_backend.items():
            logger.info("terminating %s node(s): %s", name, ", ".join(ids))
            self.terminated.update(ids)
            self.backends[name].terminate(ids)


def head_time_left(nodes: Mapping[str, Node]) -> float | None:
    """Seconds until the head's job hits its time limit (None: no limit, or not a job)."""
    return next((n.time_left_s for n in nodes.values() if n.kind == "head"), None)
