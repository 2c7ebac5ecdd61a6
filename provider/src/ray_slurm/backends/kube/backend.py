"""The Kubernetes backend: each burst node is one pod, found again by its labels.

Talks to the API with the official ``kubernetes`` client (kubeconfig or in-cluster config) and is
the one place that reads pod status. A pod that ended (its Ray stopped, or its image check
failed) is reported ended once, and as a leftover for as long as it exists: the core deletes
it, so nothing is left behind. The token Secret is created on the first launch and deleted by
``cleanup`` at ``ray down``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from ray_slurm.backends.base import LaunchRequest, Preview
from ray_slurm.backends.errors import BackendError
from ray_slurm.backends.kube import podspec
from ray_slurm.backends.nodes import START_WINDOW_S, Ended, JobState, Node, Seen
from ray_slurm.config import NodeTypeSpec, Settings
from ray_slurm.config.kubetypes import head_versions
from ray_slurm.host import tls
from ray_slurm.host.private import user_name
from ray_slurm.host.state import ClusterDir

if TYPE_CHECKING:
    from ray_slurm.backends.command_runner import CommandContext, LocalCommandRunner

logger = logging.getLogger(__name__)

NAME_RETRIES = 3  # pod names are random: a 409 AlreadyExists is retried with a new name


class KubeError(BackendError):
    """The Kubernetes API refused or failed a call; the message has the API server's words."""


def _api_message(exc: Exception) -> str:
    """The API server's own message from an ApiException (its body is a Status object)."""
    body = getattr(exc, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return f"{getattr(exc, 'status', '')} {getattr(exc, 'reason', '') or exc}".strip()


def pod_state(pod: Any) -> tuple[JobState, str]:
    """What a pod means for its Ray node, and why it waits (or how it ended)."""
    status = pod.status
    if pod.metadata.deletion_timestamp is not None:
        return JobState.STOPPING, "being deleted"
    phase = status.phase if status else "Pending"
    container = (status.container_statuses or [None])[0] if status else None
    if phase in ("Succeeded", "Failed"):
        term = container.state.terminated if container and container.state else None
        if term is None:
            return JobState.GONE, phase
        how = f"exit code {term.exit_code}" + (f" ({term.reason})" if term.reason else "")
        return JobState.GONE, f"{how}: {term.message.strip()}" if term.message else how
    if phase == "Running":
        return JobState.RUNNING, ""
    waiting = container.state.waiting if container and container.state else None
    if waiting is not None and waiting.reason:
        return JobState.PENDING, f"{waiting.reason}: {waiting.message}" if waiting.message else (
            waiting.reason
        )
    for cond in (status.conditions or []) if status else []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return JobState.PENDING, f"{cond.reason}: {cond.message}"
    return JobState.PENDING, "waiting to be scheduled"


class KubernetesBackend:
    """Burst nodes as pods in the namespaces of the cluster's Kubernetes node types."""

    name = "kubernetes"
    noun = "pod"

    def __init__(self, settings: Settings, cluster: ClusterDir, user: str | None = None) -> None:
        self.settings = settings
        self.cluster = cluster
        self.user = user or user_name()
        self.labels = podspec.cluster_labels(self.user, settings.cluster_name)
        self.namespaces = sorted({s.pod.namespace for s in settings.kube_types if s.pod})
        self.secret = podspec.secret_name(self.user, settings.cluster_name)
        self._namespace_of: dict[str, str] = {}
        self._secret_in: set[str] = set()  # namespaces where this process made the Secret
        self._reported: set[str] = set()  # ended pods already reported (they may linger)
        self._api: Any = None

    # ----------------------------------------------------------------- the client

    @property
    def api(self) -> Any:
        """The CoreV1Api, created on first use (importing the client costs ~0.5 s)."""
        if self._api is None:
            try:
                from kubernetes import client, config
            except ImportError as exc:
                raise KubeError(
                    "the kubernetes client is not installed: install "
                    "ray-slurm[kubernetes] into the Ray environment"
                ) from exc
            conn = self.settings.kube
            try:
                if not conn.kubeconfig and "KUBERNETES_SERVICE_HOST" in os.environ:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                    api_client = client.ApiClient()
                else:
                    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                        config_file=os.path.expanduser(conn.kubeconfig) or None,
                        context=conn.context or None,
                    )
            except (config.ConfigException, OSError, TypeError, ValueError) as exc:
                raise KubeError(f"cannot load the Kubernetes client config: {exc}") from exc
            self._api = client.CoreV1Api(api_client)
        return self._api

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call with the configured timeout; every failure becomes a KubeError."""
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, _request_timeout=self.settings.kube.request_timeout_s, **kwargs)
        except ApiException as exc:
            raise KubeError(f"{what}: {_api_message(exc)}") from exc
        except Exception as exc:  # urllib3 connection errors, timeouts
            raise KubeError(f"{what}: {exc}") from exc

    # -------------------------------------------------------------------- backend

    def list_nodes(self) -> Seen:
        """One list call per namespace; an ended pod is reported once, and left over until the
        core has it deleted."""
        nodes, ended, leftovers = [], [], []
        for namespace in self.namespaces:
            pods = self.call(f"listing pods in namespace {namespace}",
                              self.api.list_namespaced_pod, namespace,
                              label_selector=podspec.selector(self.labels)).items  # fmt: skip
            for pod in pods:
                name = pod.metadata.name
                labels = pod.metadata.labels or {}
                self._namespace_of[name] = namespace
                state, reason = pod_state(pod)
                node_type = labels.get(podspec.LABEL_NODE_TYPE, "")
                kind = labels.get(podspec.LABEL_KIND, "worker")
                ip = (pod.status.pod_ip or "") if pod.status else ""
                host = pod.spec.node_name or ""
                node = Node(name, self.name, kind, node_type, state, host, reason, ip=ip,
                            what=self.noun)  # fmt: skip
                if state is JobState.GONE:
                    if name not in self._reported:
                        ended.append(self._ended(pod, node, reason))
                    leftovers.append(name)
                    continue
                nodes.append(node)
        self._reported = set(leftovers)  # each reported now or before; the deleted are gone
        return Seen(nodes, ended, leftovers)

    def _ended(self, pod: Any, node: Node, how: str) -> Ended:
        """A pod whose Ray ended; if it never got going, its type is broken."""
        if not how.startswith("exit code 0"):
            how = self._last_words(pod, how)
        started = pod.status.start_time if pod.status else None
        container = (pod.status.container_statuses or [None])[0] if pod.status else None
        finished = None
        if container and container.state and container.state.terminated:
            finished = container.state.terminated.finished_at
        quick = started is None or finished is None or (
            (finished - started).total_seconds() < START_WINDOW_S
        )  # fmt: skip
        failed = not how.startswith("exit code 0")
        return Ended(node, f"pod {node.node_id} ended: {how}", failed=failed,
                     types_fault=quick and failed and node.kind == "worker")  # fmt: skip

    def _last_words(self, pod: Any, how: str) -> str:
        """The end of the pod's log when its status has no message (the image check's reason)."""
        if ":" in how:
            return how
        try:
            log = self.call("reading a pod log", self.api.read_namespaced_pod_log,
                             pod.metadata.name, pod.metadata.namespace, tail_lines=3)  # fmt: skip
        except KubeError:
            return how
        lines = [line for line in str(log).splitlines() if line.strip()]
        return f"{how}: {lines[-1]}" if lines else how

    def pod(self, spec: NodeTypeSpec, head_address: str) -> dict[str, Any]:
        """The pod one node of ``spec`` is, with a fresh name (also for render and check)."""
        name = podspec.pod_name(self.settings.cluster_name, spec.name)
        return podspec.pod_manifest(
            spec, name=name, user=self.user, cluster_name=self.settings.cluster_name,
            head_address=head_address, token_secret=self.secret, expect_versions=head_versions(),
            metrics_export=self.settings.metrics_export,
        )  # fmt: skip

    def launch(self, request: LaunchRequest) -> str:
        spec = request.spec
        assert spec.pod is not None
        namespace = spec.pod.namespace
        self._ensure_secret(namespace)
        for _ in range(NAME_RETRIES):
            body = self.pod(spec, request.head_address)
            name = str(body["metadata"]["name"])
            try:
                self.call(f"creating pod {name} in namespace {namespace}",
                           self.api.create_namespaced_pod, namespace, body)  # fmt: skip
            except KubeError as exc:
                if "already exists" in str(exc):
                    continue
                raise
            self._namespace_of[name] = namespace
            return name
        raise KubeError(f"no free pod name for node type {spec.name} after {NAME_RETRIES} tries")

    def _ensure_secret(self, namespace: str) -> None:
        """The cluster's token and TLS CA as a Secret in ``namespace``: created, or brought up to
        date (both change with every head)."""
        if namespace in self._secret_in:
            return
        try:
            ca = tls.read_ca(self.cluster.ca_file)
        except tls.TLSError as exc:  # a head of an earlier provider: no pod could join it
            raise BackendError(str(exc)) from None
        data = podspec.secret_data(self.cluster.ensure_token(), ca)
        body = podspec.secret_manifest(self.secret, namespace, self.labels, data)
        try:
            self.call(f"creating secret {self.secret} in namespace {namespace}",
                       self.api.create_namespaced_secret, namespace, body)  # fmt: skip
        except KubeError as exc:
            if "already exists" not in str(exc):
                raise
            self.call(f"updating secret {self.secret} in namespace {namespace}",
                       self.api.patch_namespaced_secret, self.secret, namespace,
                       {"stringData": data})  # fmt: skip
        self._secret_in.add(namespace)

    def terminate(self, node_ids: Sequence[str]) -> None:
        """Delete the pods (Ray drains on SIGTERM within the pod's grace period; a pod that
        ended has nothing to drain: no grace); a pod already gone is not an error."""
        for name in node_ids:
            grace = 0 if name in self._reported else None  # None: the pod's own period
            for namespace in self._namespaces_for(name):
                try:
                    self.call(f"deleting pod {name}", self.api.delete_namespaced_pod, name,
                               namespace, grace_period_seconds=grace)  # fmt: skip
                    break
                except KubeError as exc:
                    if "not found" not in str(exc):
                        raise

    def _namespaces_for(self, name: str) -> list[str]:
        known = self._namespace_of.get(name)
        return [known] if known else self.namespaces

    def drain(self, node_ids: Sequence[str]) -> None:
        """A pod has no end known in advance (no time limit): never drained."""

    def cleanup(self) -> None:
        """Every pod, secret and service with this cluster's labels, in every namespace."""
        self._secret_in.clear()
        sel = podspec.selector(self.labels)
        for namespace in self.namespaces:
            for kind, fn in (
                ("pods", self.api.delete_collection_namespaced_pod),
                ("secrets", self.api.delete_collection_namespaced_secret),
            ):
                self.call(f"deleting {kind} in namespace {namespace}", fn, namespace,
                           label_selector=sel)  # fmt: skip
            services = self.call(f"listing services in namespace {namespace}",
                                  self.api.list_namespaced_service, namespace,
                                  label_selector=sel).items  # fmt: skip
            for svc in services:
                self.call(f"deleting service {svc.metadata.name}",
                           self.api.delete_namespaced_service, svc.metadata.name,
                           namespace)  # fmt: skip
        logger.info("removed the cluster's pods, secrets and services from %s",
                    ", ".join(self.namespaces))  # fmt: skip

    def address(self, node: Node) -> str:
        """The pod's own IP (or its node's, with host_network)."""
        return node.ip

    def command_runner(self, node_id: str, ctx: CommandContext) -> LocalCommandRunner:
        raise RuntimeError(f"pod {node_id} runs no commands: burst workers start Ray "
                           "themselves and are reached only through Ray")  # fmt: skip

    def preview(self, spec: NodeTypeSpec, head_address: str) -> Preview:
        """The pod one node of ``spec`` is: a pod has no job script, nothing is written."""
        text = yaml.safe_dump(self.pod(spec, head_address), sort_keys=False)
        return Preview("a Kubernetes pod", text)
