"""Validation of a whole cluster config: the ``provider`` section and every node type.

`ray up`, `ray down` and the autoscaler all pass the config through ``bootstrap`` (Ray calls
``SlurmNodeProvider.bootstrap_config``), so a bad config is refused before anything is submitted,
with every problem listed by field and value. Node types themselves are checked in ``nodetypes``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ray_slurm.backends.slurm.formats import NodeMapError, load_node_map
from ray_slurm.config.kubetypes import KubeConnection, check_connection, check_label_value
from ray_slurm.config.nodetypes import (
    BACKENDS,
    DEFAULT_BACKEND,
    HEAD_BACKENDS,
    NAME_RE,
    PATH_RE,
    SLURM_VALUE_RE,
    ConfigError,
    NodeTypeSpec,
    count_field,
    parse_size,
    resolve_node_type,
)
from ray_slurm.host.state import ClusterDir

__all__ = ["ConfigError", "NodeTypeSpec", "Settings", "bootstrap", "load_settings", "parse_size"]

HEAD_MODES = tuple(HEAD_BACKENDS)
DEFAULT_HEAD_MODE = "login"
DEFAULT_TEMP_ROOT = "/tmp"  # node-local and short: Ray's socket paths live under it
DEFAULT_METRICS_EXPORT = False
WORKER_BACKENDS = tuple(name for name, where in BACKENDS.items() if where.worker)
DEFAULT_STATE_DIR = "~/.ray-slurm"  # each cluster's files: <state_dir>/<cluster_name>
DEFAULT_SLURM_TIMEOUT_S = 20  # a SLURM command slower than this is treated as failed
DEFAULT_PENDING_TIMEOUT_S = 600  # a job queued longer is cancelled (per type: node_config)
DEFAULT_BURST_IDLE_TIMEOUT_S = 60  # Kubernetes types: burst pods are the first to go when idle
# How often the head's autoscaler looks at demand (Ray's AUTOSCALER_UPDATE_INTERVAL_S, 5 by
# default): new demand waits for its next loop before a job is submitted.
DEFAULT_AUTOSCALER_INTERVAL_S = 1
# At most one squeue per cluster this often (plus one after each launch or termination): what
# protects slurmctld from the autoscaler's faster loop. 200 clusters at rest: 40 squeue/s.
DEFAULT_SQUEUE_INTERVAL_S = 5
# Between two loops, the head's autoscaler asks the GCS this often (ms) whether new demand came,
# and acts at once if so (``demandwake``); 0 waits for the next loop, as Ray does.
DEFAULT_DEMAND_POLL_MS = 100
MIN_DEMAND_POLL_MS = 20
PROVIDER_KEYS = {
    "type", "module", "head_mode", "head_ip", "state_dir", "ray_env", "node_map", "slurm_bin",
    "temp_root", "slurm_timeout_s", "pending_timeout_s", "use_internal_ips", "kubernetes",
    "autoscaler_interval_s", "squeue_interval_s", "demand_poll_ms", "metrics_export",
    "disable_node_updaters",
    "disable_launch_config_check", "foreground_node_launch",
    # added by Ray and by bootstrap_config
    "_config_cache_path", "_head_node_type", "_node_types", "_min_workers",
}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """The provider section, resolved."""

    cluster_name: str
    head_mode: str
    state_dir: str
    ray_env: str
    head_ip: str
    node_map: str
    slurm_bin: str
    temp_root: str
    slurm_timeout_s: float
    pending_timeout_s: int
    head_node_type: str
    node_types: dict[str, NodeTypeSpec]
    kube: KubeConnection = KubeConnection()
    autoscaler_interval_s: int = DEFAULT_AUTOSCALER_INTERVAL_S
    squeue_interval_s: int = DEFAULT_SQUEUE_INTERVAL_S
    demand_poll_ms: int = DEFAULT_DEMAND_POLL_MS
    # Each node's Prometheus metrics export port: it answers anyone who can reach the node,
    # without token or TLS, so it is opened only where the site chose to (for its scraper).
    metrics_export: bool = DEFAULT_METRICS_EXPORT

    @property
    def kube_types(self) -> list[NodeTypeSpec]:
        return [s for s in self.node_types.values() if s.burst]

    def spec(self, node_type: str) -> NodeTypeSpec:
        try:
            return self.node_types[node_type]
        except KeyError:
            raise ConfigError([f"unknown node type {node_type!r}"]) from None

    def pending_timeout(self, spec: NodeTypeSpec) -> int:
        """How long a job of this type may wait in the queue before it is cancelled."""
        return spec.pending_timeout_s or self.pending_timeout_s


def check_cluster_name(cluster_name: Any, problems: list[str]) -> None:
    if not isinstance(cluster_name, str) or not NAME_RE.match(cluster_name):
        problems.append(
            f"cluster_name: {cluster_name!r} must match {NAME_RE.pattern} "
            "(it names the cluster's SLURM jobs and state directory)"
        )


def cluster_dir(provider: Mapping[str, Any], cluster_name: Any) -> ClusterDir:
    """Where a cluster keeps its files, from its config as written: ``cluster_name`` (its rule)
    and ``provider.state_dir`` (a string). What the commands that only look for a running
    cluster need (``ray-slurm env``, ``ray get-head-ip``): they must not refuse a cluster that
    is up because its yaml changed since. ConfigError names a bad value."""
    problems: list[str] = []
    check_cluster_name(cluster_name, problems)
    state_dir = provider.get("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(state_dir, str):
        problems.append(f"provider.state_dir: expected a path, got {state_dir!r}")
    if problems:
        raise ConfigError(problems)
    return ClusterDir(state_dir, cluster_name)


def check_provider(provider: Mapping[str, Any], cluster_name: str, problems: list[str]) -> None:
    check_cluster_name(cluster_name, problems)
    for key in sorted(set(provider) - PROVIDER_KEYS):
        problems.append(f"provider: unknown key {key!r}")
    mode = provider.get("head_mode", DEFAULT_HEAD_MODE)
    if mode not in HEAD_MODES:
        problems.append(f"provider.head_mode: {mode!r} is not one of {', '.join(HEAD_MODES)}")
    for key in ("state_dir", "ray_env", "node_map", "temp_root", "slurm_bin"):
        value = provider.get(key)
        if value is not None and (not isinstance(value, str) or not PATH_RE.match(value)):
            problems.append(
                f"provider.{key}: expected a path without spaces or quotes, got {value!r}"
            )
    temp_root = os.path.expanduser(str(provider.get("temp_root", DEFAULT_TEMP_ROOT)))
    if len(temp_root) > 24:
        problems.append(
            f"provider.temp_root: {temp_root!r} is too long: Ray's socket paths "
            "under it must stay below 107 bytes (use a short node-local path)"
        )
    count_field(provider.get("slurm_timeout_s"), "provider.slurm_timeout_s", problems, 1)
    count_field(provider.get("pending_timeout_s"), "provider.pending_timeout_s", problems, 1)
    count_field(provider.get("autoscaler_interval_s"), "provider.autoscaler_interval_s",
                problems, 1)  # fmt: skip
    count_field(provider.get("squeue_interval_s"), "provider.squeue_interval_s", problems, 1)
    demand_poll_ms(provider.get("demand_poll_ms"), problems)
    metrics = provider.get("metrics_export")
    if metrics is not None and not isinstance(metrics, bool):
        problems.append(f"provider.metrics_export: expected true or false, got {metrics!r}")
    head_ip = provider.get("head_ip")
    if head_ip is not None and not re.match(r"^[0-9A-Fa-f:.]+$", str(head_ip)):
        problems.append(f"provider.head_ip: {head_ip!r} is not an IP address")
    if provider.get("disable_node_updaters") is not True:
        problems.append(
            "provider.disable_node_updaters: must be true (every SLURM job starts "
            "Ray from its own job script; there is no SSH to run setup commands)"
        )


def backend_of(name: str, type_cfg: Mapping[str, Any], kind: str, head_mode: str,
               problems: list[str]) -> str:  # fmt: skip
    """Where a type's nodes run: the head per head_mode, a worker per node_config.backend."""
    node_config = type_cfg.get("node_config") or {}
    wanted = DEFAULT_BACKEND
    if isinstance(node_config, Mapping):
        wanted = node_config.get("backend", DEFAULT_BACKEND)
    if wanted not in WORKER_BACKENDS:
        problems.append(f"available_node_types.{name}.node_config.backend: {wanted!r} is not "
                        f"one of {', '.join(WORKER_BACKENDS)}")  # fmt: skip
        return DEFAULT_BACKEND
    if kind == "head":
        if not BACKENDS[wanted].batch:
            problems.append(
                f"available_node_types.{name}.node_config.backend: the head cannot run on "
                f"{wanted} (it runs on the login node or in a SLURM job)"
            )
        return HEAD_BACKENDS.get(head_mode, HEAD_BACKENDS[DEFAULT_HEAD_MODE])
    return str(wanted)


def load_settings(provider: Mapping[str, Any], cluster_name: str,
                  expect: str | None = None) -> Settings:  # fmt: skip
    """Settings from a provider section that ``bootstrap`` has seen (it adds the node types);
    raises ConfigError listing every problem. ``expect``: see ``kubetypes.check_pod_options``."""
    problems: list[str] = []
    if "_node_types" not in provider:
        problems.append(
            "provider: this config was not bootstrapped by ray_slurm "
            "(run it through `ray up`, or call SlurmNodeProvider.bootstrap_config)"
        )
        raise ConfigError(problems)
    settings = resolve_settings(provider, cluster_name, problems, expect)
    if problems:
        raise ConfigError(problems)
    return settings


def resolve_settings(provider: Mapping[str, Any], cluster_name: str, problems: list[str],
                     expect: str | None = None) -> Settings:  # fmt: skip
    """Every rule of the provider section and the node types, appending problems, and the
    settings as far as they can be told: a bad value falls back to its default, a type with
    problems keeps only its valid partition (so that ``ray-slurm check`` can still check the
    site for a config with problems, all of them at once)."""
    check_provider(provider, cluster_name, problems)
    head_node_type = provider.get("_head_node_type")
    node_types_cfg = provider.get("_node_types")
    if not head_node_type:
        problems.append("head_node_type: required")
    if not isinstance(node_types_cfg, Mapping):
        node_types_cfg = {}
    mode = provider.get("head_mode", DEFAULT_HEAD_MODE)
    kube = check_connection(provider.get("kubernetes"), problems)
    specs = {}
    for name, type_cfg in node_types_cfg.items():
        kind = "head" if name == head_node_type else "worker"
        backend = backend_of(name, type_cfg, kind, mode, problems)
        before = len(problems)
        spec = resolve_node_type(name, type_cfg, kind, backend, problems, kube.namespace, expect)
        if BACKENDS[backend].burst:  # its pods carry the type and cluster names as labels
            check_label_value(name, f"available_node_types.{name}", problems)
            check_label_value(cluster_name, "cluster_name", problems)
        specs[str(name)] = spec or partial_node_type(str(name), type_cfg, kind, backend)
        if len(problems) > before and spec is not None:
            specs[str(name)] = partial_node_type(str(name), type_cfg, kind, backend)

    def text(key: str, default: str) -> str:
        value = provider.get(key, default)
        return os.path.expanduser(value) if isinstance(value, str) else default

    def number(key: str, default: float) -> float:
        value = provider.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 1
        return float(value) if ok else float(default)

    return Settings(
        cluster_name=str(cluster_name),
        head_mode=str(mode) if mode in HEAD_MODES else DEFAULT_HEAD_MODE,
        state_dir=text("state_dir", DEFAULT_STATE_DIR),
        ray_env=text("ray_env", sys.prefix),
        head_ip=str(provider.get("head_ip", "")),
        node_map=text("node_map", ""),
        slurm_bin=str(provider.get("slurm_bin", "")),
        temp_root=text("temp_root", DEFAULT_TEMP_ROOT),
        slurm_timeout_s=number("slurm_timeout_s", DEFAULT_SLURM_TIMEOUT_S),
        pending_timeout_s=int(number("pending_timeout_s", DEFAULT_PENDING_TIMEOUT_S)),
        head_node_type=str(head_node_type or ""),
        node_types=specs,
        kube=kube,
        autoscaler_interval_s=int(number("autoscaler_interval_s", DEFAULT_AUTOSCALER_INTERVAL_S)),
        squeue_interval_s=int(number("squeue_interval_s", DEFAULT_SQUEUE_INTERVAL_S)),
        demand_poll_ms=demand_poll_ms(provider.get("demand_poll_ms"), []),
        metrics_export=provider.get("metrics_export") is True,
    )


def demand_poll_ms(value: Any, problems: list[str]) -> int:
    """``provider.demand_poll_ms``: 0 or at least ``MIN_DEMAND_POLL_MS``; a bad value is added to
    ``problems`` and the default is used (unset: the default)."""
    if value is None:
        return DEFAULT_DEMAND_POLL_MS
    ms = count_field(value, "provider.demand_poll_ms", problems)
    if ms is not None and 0 < ms < MIN_DEMAND_POLL_MS:
        problems.append(f"provider.demand_poll_ms: must be 0 (wait for the autoscaler's loop) or "
                        f">= {MIN_DEMAND_POLL_MS}, got {ms}")  # fmt: skip
        ms = None
    return DEFAULT_DEMAND_POLL_MS if ms is None else ms


def partial_node_type(name: str, type_cfg: Any, kind: str, backend: str) -> NodeTypeSpec:
    """What can be told of a node type with problems: its partition, if that one is valid."""
    node_config = type_cfg.get("node_config") if isinstance(type_cfg, Mapping) else None
    partition = node_config.get("partition") if isinstance(node_config, Mapping) else None
    valid = isinstance(partition, str) and SLURM_VALUE_RE.match(partition)
    return NodeTypeSpec(name=name, kind=kind, backend=backend, resources={},
                        slurm={"partition": str(partition)} if valid else {},
                        complete=False)  # fmt: skip


def expected_versions(on_site: bool) -> str | None:
    """What Kubernetes images must run (``kubetypes.check_pod_options``' ``expect``): this
    environment's Ray and Python on the site (None), nothing checked away from it ("")."""
    return None if on_site else ""


def bootstrap(config: dict[str, Any], on_site: bool = True) -> dict[str, Any]:
    """Validate a whole cluster config and record in ``provider`` what the provider needs later.

    The provider is constructed with the provider section only, but must know the head's node
    type and every type's resources (the head is created through ``create_node``, which gets no
    resources). Raises ConfigError listing every problem. ``on_site=False``: checked away from
    the site it is for (an Ansible controller): what only the site has (the node map file, the
    Ray and Python of its Ray environment, which Kubernetes images must match) is not checked.
    """
    expect = expected_versions(on_site)
    provider = config["provider"]
    provider["_head_node_type"] = config.get("head_node_type")
    provider["_node_types"] = {
        name: {"node_config": t.get("node_config") or {}, "resources": t.get("resources") or {}}
        for name, t in (config.get("available_node_types") or {}).items()
    }
    _default_idle_timeouts(config)
    problems: list[str] = []
    if not config.get("head_node_type"):
        problems.append("head_node_type: required")
    for name, t in (config.get("available_node_types") or {}).items():
        where = f"available_node_types.{name}"
        low = count_field(t.get("min_workers"), f"{where}.min_workers", problems)
        high = count_field(t.get("max_workers"), f"{where}.max_workers", problems)
        if low is not None and high is not None and low > high:
            problems.append(f"{where}.min_workers: {low} is more than max_workers ({high})")
    try:
        settings = load_settings(provider, config.get("cluster_name", ""), expect)
        if settings.node_map and on_site:
            load_node_map(settings.node_map)  # unreadable or malformed: refused now, not in a job
    except NodeMapError as exc:
        problems.append(f"provider.node_map: {exc}")
    except ConfigError as exc:
        problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise ConfigError(problems)
    provider["_min_workers"] = {  # for `ray down --keep-min-workers` (see launcher.py)
        name: int(t.get("min_workers") or 0)
        for name, t in (config.get("available_node_types") or {}).items()
    }
    return config


def bootstrapped_provider(provider_config: dict[str, Any], cluster_name: str) -> dict[str, Any]:
    """The provider section as bootstrap left it. `ray get-head-ip`/`get-worker-ips` (and
    `ray dashboard`) make a provider from the raw yaml: the running cluster's own section, the
    one `ray up` uploaded to its directory, has what the provider needs."""
    if "_node_types" in provider_config:
        return provider_config
    uploaded = cluster_dir(provider_config, cluster_name)
    try:
        section = yaml.safe_load(uploaded.bootstrap_config.read_text())["provider"]
    except FileNotFoundError:
        raise ConfigError([f"cluster {cluster_name} is not up ({uploaded.bootstrap_config} "
                           "is missing): run `ray up` first"]) from None  # fmt: skip
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError([f"cannot read {uploaded.bootstrap_config}: {exc}"]) from None
    return {**section, **provider_config, "_head_node_type": section.get("_head_node_type"),
            "_node_types": section.get("_node_types")}  # fmt: skip


def _default_idle_timeouts(config: dict[str, Any]) -> None:
    """Kubernetes types without ``idle_timeout_s`` get a short one: burst pods go first."""
    for t in (config.get("available_node_types") or {}).values():
        node_config = t.get("node_config") or {}
        backend = node_config.get("backend") if isinstance(node_config, Mapping) else None
        where = BACKENDS.get(str(backend)) if backend is not None else None
        if where is not None and where.burst:
            t.setdefault("idle_timeout_s", DEFAULT_BURST_IDLE_TIMEOUT_S)


def fillout_resources(config: dict[str, Any]) -> dict[str, Any]:
    """Fill each type's ``resources`` from its SLURM request; bootstrap reports invalid types."""
    mode = config.get("provider", {}).get("head_mode", DEFAULT_HEAD_MODE)
    head = config.get("head_node_type")
    for name, type_cfg in (config.get("available_node_types") or {}).items():
        kind = "head" if name == head else "worker"
        backend = backend_of(name, type_cfg, kind, mode, [])
        spec = resolve_node_type(name, type_cfg, kind, backend, [])
        if spec is not None:
            type_cfg["resources"] = dict(spec.resources)
        else:  # let Ray's schema pass: bootstrap then names the real problem, not a schema dump
            type_cfg.setdefault("resources", {})
    return config
