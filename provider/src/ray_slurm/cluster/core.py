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
  autoscaler reads.

``terminate`` is the one way the provider ends nodes (Ray's requests, ``ray down``, a head that
waited too long for ``ray up``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ray_slurm import config
from ray_slurm.backends.base import Backend
from ray_slurm.backends.nodes import Ended, Node
from ray_slurm.cluster import burst, raynodes
from ray_slurm.cluster.watch import NodeWatch
from ray_slurm.config import ConfigError, Settings
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


@dataclass
class Decisions:
    """What the core will do about one listing's news."""

    told: list[Ended] = field(default_factory=list)  # ends to log, in the backend's words
    back_off: list[tuple[str, str]] = field(default_factory=list)  # (node type, why)
    remove: dict[str, list[str]] = field(default_factory=dict)  # backend -> node ids
    drain: list[str] = field(default_factory=list)  # node ids whose Ray nodes the GCS stops
    held: dict[str, int] | None = None  # types held at their size; None: nothing to write


class Core:
    """Decides on what was seen and carries it out; the provider asks it to end nodes too."""

    def __init__(
        self,
        settings: Settings,
        cluster: ClusterDir,
        backends: Mapping[str, Backend],
        watch: NodeWatch,
        autoscaling: burst.AutoscalingConfig | None,
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
        return decisions

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

    def settle(self, news: News) -> None:
        """Decide on one listing's news and carry it out."""
        self.carry_out(self.decide(news))

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
