"""``SlurmNodeProvider``: Ray's autoscaler API on top of the node backends.

Ray loads it with ``provider: {type: external, module: ray_slurm.SlurmNodeProvider}`` both in
``ray up``/``ray down`` on the login node and in the head's autoscaler (v2, which wraps it in
``NodeProviderAdapter``). Both processes share the cluster directory on the shared filesystem.

The provider lists nodes (one ``squeue`` for all SLURM jobs) and reads the state file at most
once per ``squeue_interval_s`` (5 s), and again after each launch or termination; every other
call is answered from that listing (``listing``: in the head's autoscaler a thread renews it, so
the loop never waits for ``squeue``). The autoscaler itself loops faster
(``autoscaler_interval_s``, 1 s) and wakes between loops when new demand comes (``demandwake``),
without asking more of slurmctld.
A node exists while its backend says so; the state only adds the tags Ray set, and nodes the
state lost are recovered from their job names.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    STATUS_UP_TO_DATE,
    TAG_RAY_LAUNCH_CONFIG,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from ray_slurm import config
from ray_slurm.autoscaler.launcher import (
    ConfigRefused,
    HeadStartedElsewhere,
    for_teardown,
    quiet_ray_legacy_field_warnings,
    restart_requested,
)
from ray_slurm.backends import factory as backends
from ray_slurm.backends.base import Backend, LaunchRequest
from ray_slurm.backends.command_runner import CommandContext, LocalCommandRunner, NodeStartTimeout
from ray_slurm.backends.nodes import JobState, Node
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.cluster import burst
from ray_slurm.cluster.core import Core, head_time_left
from ray_slurm.cluster.listing import Listing
from ray_slurm.cluster.policy import LaunchRefused, TypeBackoff, worker_time_limit_minutes
from ray_slurm.cluster.startpace import StartPace
from ray_slurm.cluster.watch import NodeWatch
from ray_slurm.config import ConfigError, NodeTypeSpec
from ray_slurm.hooks import demandwake, usertmp
from ray_slurm.host.private import UnsafePathError
from ray_slurm.host.state import ClusterDir, StateLockError

logger = logging.getLogger(__name__)
quiet_ray_legacy_field_warnings()


class SlurmNodeProvider(NodeProvider):
    """Every Ray node is one SLURM batch job; the head may run on the login node, and burst
    workers may run as Kubernetes pods (``burst`` says when)."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        try:
            usertmp.require()  # Ray's own files (and its children's) stay in a private directory
            provider_config = config.bootstrapped_provider(provider_config, cluster_name)
            settings = config.load_settings(provider_config, cluster_name)
            self.cluster = ClusterDir(settings.state_dir, cluster_name).create()
            with self.cluster.locked():  # a filesystem without flock is refused now, clearly
                pass
        except (ConfigError, UnsafePathError, StateLockError) as exc:
            raise ConfigRefused(str(exc)) from exc
        super().__init__(provider_config, cluster_name)
        self.backoff = TypeBackoff()
        self.watch = NodeWatch(settings, self.cluster, self.backoff)
        slurm = Slurm(settings.slurm_bin, settings.slurm_timeout_s)
        self.backends = backends.make(settings, self.cluster, slurm)
        # Only the head's autoscaler keeps the autoscaling config (the head job names it).
        self.autoscaling: burst.AutoscalingConfig | None = None
        if os.environ.get(burst.AUTOSCALING_CONFIG_ENV) == str(self.cluster.autoscaling_config):
            self.autoscaling = burst.AutoscalingConfig(
                self.cluster.bootstrap_config, self.cluster.autoscaling_config
            )
            demandwake.install(demandwake.gcs_demand(self._gcs_address),
                               settings.demand_poll_ms)  # fmt: skip
        self._restart_head = restart_requested()
        self._teardown_began: dict[tuple[tuple[str, str], ...], set[str]] = {}
        self.starts = StartPace()
        self.listing = Listing(
            self.backends,
            self.cluster,
            cluster_name,
            self.watch,
            # slower while slurmctld throttles the user (ratelimit.Pace)
            lambda: self.settings.squeue_interval_s * slurm.pace.factor,
        )
        self._lock = self.listing.lock
        self.core = Core(settings, self.cluster, self.backends, self.watch, self.autoscaling,
                         self._lock)  # fmt: skip
        if self.autoscaling is not None:
            self.listing.start()  # the autoscaler's loop answers from memory (``listing``)

    # ----------------------------------------------------------------- listing

    @property
    def settings(self) -> config.Settings:
        """The cluster's settings: the core's, which follows the config `ray up` uploads."""
        return self.core.settings

    def _refresh(self, force: bool = False) -> dict[str, Node]:
        """The listing; what it taught since the last call goes to the core first."""
        nodes = self.listing.current(force)
        news = self.listing.news()
        if news is not None:
            with self._lock:
                launched = self.core.settle(news)  # (replacements: ``rollover``)
            if launched:
                self.listing.invalidate()
        return nodes

    def _gcs_address(self) -> str | None:
        head = self.cluster.head()
        return head.address if head else None

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        nodes = self._refresh()
        with self._lock:
            self.watch.reported(nodes)
            return [
                node_id
                for node_id in nodes
                if all(
                    self.listing.tags.get(node_id, {}).get(k) == v for k, v in tag_filters.items()
                )  # fmt: skip
            ]

    def _node(self, node_id: str) -> Node | None:
        node = self._refresh().get(node_id)
        return node if node is not None else self._refresh(force=True).get(node_id)

    def is_running(self, node_id: str) -> bool:
        node = self._node(node_id)
        return node is not None and node.state is JobState.RUNNING

    def is_terminated(self, node_id: str) -> bool:
        return self._node(node_id) is None

    def nodes_for_teardown(self, tag_filters: dict[str, str]) -> list[str]:
        """What `ray down` stops (``launcher.for_teardown``)."""
        nodes = self.non_terminated_nodes(tag_filters)
        began = self._teardown_began.setdefault(tuple(sorted(tag_filters.items())), set(nodes))
        return for_teardown(nodes, self.node_tags, began,
                            self.provider_config.get("_min_workers") or {})  # fmt: skip

    def node_tags(self, node_id: str) -> dict[str, str]:
        self._refresh()
        with self._lock:
            tags = dict(self.listing.tags.get(node_id, {}))
        if self._restart_head and tags.get(TAG_RAY_NODE_KIND) == NODE_KIND_HEAD:
            # `ray up --restart-only`: a node's Ray runtime is its job (or the login head's
            # process), so restarting it means a new head. Reported out of date once, the head
            # is relaunched by Ray's own `ray up` logic, as after a change of its node_config.
            self._restart_head = False
            tags[TAG_RAY_LAUNCH_CONFIG] = "restart-requested"
        return tags

    def node_info(self, node_id: str) -> Node | None:
        """What the backend says of a node (state, host, pending reason): for tools and logs."""
        return self._node(node_id)

    def internal_ip(self, node_id: str) -> str:
        node = self._node(node_id)
        if node is None or not node.host:
            return ""  # not placed yet
        return self.backends[node.backend].address(node)

    def external_ip(self, node_id: str) -> str:
        return self.internal_ip(node_id)

    # ---------------------------------------------------------------- changing

    def create_node(self, node_config: dict[str, Any], tags: dict[str, str], count: int) -> None:
        self.create_node_with_resources_and_labels(node_config, tags, count, {}, {})

    def create_node_with_resources_and_labels(
        self,
        node_config: dict[str, Any],
        tags: dict[str, str],
        count: int,
        resources: dict[str, float],
        labels: dict[str, str],
    ) -> None:
        spec = self.settings.spec(tags[TAG_RAY_USER_NODE_TYPE])
        # While a type fails, one node at a time; the rest of the request fails at once (below).
        allowed = self.backoff.allowed(
            spec.name, count, self.watch.unproven(spec.name, self._refresh())
        )
        if spec.name in self.core.held and spec.burst:
            raise LaunchRefused(f"node type {spec.name}: Kubernetes types are used only while "
                                "the SLURM types cannot deliver")  # fmt: skip
        if tags.get(TAG_RAY_NODE_KIND) == NODE_KIND_HEAD:
            with self.cluster.locked("head"):  # two `ray up` at once start one head
                nodes = self._refresh(force=True)
                ended = self.core.terminated
                running = [n.node_id for n in nodes.values()
                           if n.kind == "head" and n.node_id not in ended]  # fmt: skip
                if running:
                    raise HeadStartedElsewhere(
                        f"the head of cluster {self.cluster_name} was started meanwhile by "
                        f"another `ray up` ({running[0]}): this one stops here and starts no "
                        "second head; run `ray up` again once the other is done"
                    )
                if stale := [n.node_id for n in nodes.values() if n.kind == "worker"]:
                    logger.warning("cancelling workers of an earlier head (they cannot join a "
                                   "new one): %s", ", ".join(stale))  # fmt: skip
                    self.terminate_nodes(stale)
                self.cluster.clear_head()
                self.cluster.new_secrets()  # a new token and TLS CA for every head
                self._launch(spec, tags, LaunchRequest(spec), allowed)
            return
        head = self.cluster.head()
        if head is None:
            raise RuntimeError(f"cluster {self.cluster_name} has no running head "
                               f"({self.cluster.head_file} is missing)")  # fmt: skip
        if self.autoscaling is not None:  # the head's autoscaler paces starts (``startpace``)
            nodes = {i: n for i, n in self._refresh().items() if i not in self.core.terminated}
            allowed = self.starts.room(spec.name, nodes, head.address, allowed,
                                       self.autoscaling.bootstrap())  # fmt: skip
        # Workers start Ray from their own job script (disable_node_updaters): no updater will
        # ever mark them, so they are up to date from the start.
        tags = {**tags, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE}
        minutes = worker_time_limit_minutes(spec.time_s, self._head_time_left())
        request = LaunchRequest(
            spec, head_address=head.address, time_limit_minutes=minutes
        )  # never outlive the head's job
        self._launch(spec, tags, request, allowed)
        if allowed < count:
            why = "the rest once more of those starting have joined (upscaling_speed)"
            if self.backoff.failing(spec.name):
                why = "it failed recently: one at a time until one starts"
            raise LaunchRefused(f"node type {spec.name}: launched {allowed} of {count}; {why}")

    def _launch(self, spec: NodeTypeSpec, tags: dict[str, str], request: LaunchRequest,
                count: int) -> None:  # fmt: skip
        try:
            self.core.launch(spec, tags, request, count)
        finally:  # the launched ones are listed at once, even if a later one failed
            self.listing.invalidate()

    def _head_time_left(self) -> float | None:
        """Seconds until the head's job hits its time limit (None: no limit, or not a job)."""
        return head_time_left(self._refresh())

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self._lock, self.cluster.update() as state:
            entry = state["nodes"].get(node_id)
            if entry is None:
                logger.warning("set_node_tags: unknown node %s", node_id)
                return
            entry["tags"].update(tags)
            self.listing.set_tags(node_id, entry["tags"])

    def terminate_node(self, node_id: str) -> None:
        self.terminate_nodes([node_id])

    def terminate_nodes(self, node_ids: list[str]) -> None:
        """One call per backend for all nodes (one scancel for any number of jobs); workers
        before heads, backends with workers first."""
        self.core.terminate(node_ids, self._refresh(force=True))
        self.listing.invalidate()

    def cleanup_cluster_resources(self) -> None:
        """After `ray down`: forget the head's address and config (token and logs stay), and
        let each backend remove what it made besides nodes (the pods' token Secret)."""
        self.cluster.clear_head()
        for backend in self.backends.values():
            backend.cleanup()

    # ----------------------------------------------------------------- commands

    def get_command_runner(
        self,
        log_prefix: str,
        node_id: str,
        auth_config: dict[str, Any],
        cluster_name: str,
        process_runner: Any,
        use_internal_ip: bool,
        docker_config: dict[str, Any] | None = None,
    ) -> LocalCommandRunner:
        """Commands reach a node the way its backend says: never SSH (``command_runner``)."""
        context = CommandContext(
            log_prefix=log_prefix, process_runner=process_runner,
            stop_ray=lambda: self._stop_ray(node_id), stop_cluster=self._stop_cluster,
            not_ready=lambda: self._not_ready(node_id),
        )  # fmt: skip
        return self._backend_of(node_id).command_runner(node_id, context)

    def _backend_of(self, node_id: str) -> Backend:
        """A listed node's backend; else the one the state recorded at launch; else the head's
        (Ray runs commands only on the head): its runner then says why the node cannot run any."""
        node = self._node(node_id)
        if node is not None:
            return self.backends[node.backend]
        entry = self.cluster.read_state()["nodes"].get(node_id)
        if entry is not None and entry["backend"] in self.backends:
            return self.backends[entry["backend"]]
        return self.backends[self.settings.spec(self.settings.head_node_type).backend]

    def _stop_ray(self, node_id: str) -> None:
        """`ray stop` on a node (`ray down` sends it to the head first): the node stops; a
        head's workers stop before it, so that none of them keeps calling its address after
        the head released its ports (which a neighbour may hold next)."""
        nodes = self._refresh(force=True)
        node = nodes.get(node_id)
        ids = [node_id]
        if node is not None and node.kind == "head":
            ids = [n.node_id for n in nodes.values() if n.kind == "worker"] + ids
        self.terminate_nodes(ids)

    def _stop_cluster(self) -> None:
        """`ray exec --stop`: every node of the cluster, as `ray down` would."""
        self.terminate_nodes(list(self._refresh(force=True)))
        self.cleanup_cluster_resources()

    def _not_ready(self, node_id: str) -> str | None:
        """Why a node's job cannot run commands yet, or None if it can.

        A job that waits longer than its type's pending timeout is cancelled and the wait ends
        with NodeStartTimeout: `ray up` fails with SLURM's reason instead of hanging.
        """
        node = self._refresh(force=True).get(node_id)
        why, expired = self.watch.not_ready(node_id, node, self.listing.created.get(node_id))
        if expired:
            self.terminate_nodes([node_id])
            raise NodeStartTimeout(why)
        return why

    # ------------------------------------------------------------ config hooks

    @staticmethod
    def bootstrap_config(cluster_config: dict[str, Any]) -> dict[str, Any]:
        """`ray up`/`ray down` pass the config here first: the one config model (``config``)
        refuses it with every problem before anything is launched."""
        try:
            usertmp.require()  # refuse before anything is launched, naming the path
            bootstrapped, _ = config.load(cluster_config).required()
        except (ConfigError, UnsafePathError) as exc:
            raise ConfigRefused(str(exc)) from exc
        return bootstrapped

    @staticmethod
    def fillout_available_node_types_resources(cluster_config: dict[str, Any]) -> dict[str, Any]:
        return config.fillout_resources(cluster_config)
