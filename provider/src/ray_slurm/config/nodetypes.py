"""Node types: one type's SLURM request (``node_config``) and Ray's view of it (``resources``).

Everything a job script later says about a node type is checked here, before anything is
submitted: option values that go into ``#SBATCH`` lines, and the agreement between what the job
asks SLURM for and what Ray is told. Problems name the field and the bad value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray_slurm.backends.slurm.formats import parse_duration
from ray_slurm.config.kubetypes import (
    DEFAULT_NAMESPACE,
    KUBE_NODE_CONFIG_KEYS,
    PodOptions,
    check_pod_options,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Values that go into "#SBATCH --opt=value" lines: no whitespace, quotes or shell syntax.
SLURM_VALUE_RE = re.compile(r"^[A-Za-z0-9_.,:+=@/\-\[\]&|*!()%]+$")
SBATCH_OPTION_RE = re.compile(r"^--[a-z][a-z0-9-]*(=[^\s'\"\\`$;]+)?$")
PATH_RE = re.compile(r"^[A-Za-z0-9_.,:+=@/~-]+$")
SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)
_UNITS = {"": 1024**2, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

MIN_OBJECT_STORE_BYTES = 75 * 1024**2  # Ray refuses a smaller object store
DEFAULT_OBJECT_STORE_FRACTION = 0.3  # Ray's own default share of the node's memory

SLURM_KEYS = {"partition", "account", "qos", "time", "constraint", "gres", "reservation"}
NODE_CONFIG_KEYS = SLURM_KEYS | {
    "cpus", "memory", "gpus", "object_store_memory", "exclusive", "sbatch_options", "setup",
    "pending_timeout_s", "walltime_warning_s", "rollover_lead_s", "backend",
}  # fmt: skip
# SLURM signals the job (USR1) this long before its time limit: it drains its Ray node and leaves.
DEFAULT_WALLTIME_WARNING_S = 90
LOGIN_HEAD_KEYS = {"object_store_memory", "setup"}
# Options the job script sets itself, so a type cannot contradict them through sbatch_options.


@dataclass(frozen=True)
class Where:
    """What a backend's nodes are, as far as the config's rules go. ``BACKENDS`` is the one
    place that names the backends; every rule asks a property of its row, never a name."""

    keys: frozenset[str]  # the node_config keys it accepts
    batch: bool = False  # a SLURM batch job: sbatch options, partitions and time limits apply
    burst: bool = False  # a Kubernetes pod (labels name it): used only while SLURM cannot deliver
    sized: bool = False  # an allocation of its own: cpus and memory are required
    on_login: bool = False  # a process on the login node (the head, head_mode: login)
    worker: bool = True  # workers may run there (node_config.backend)


BACKENDS = {
    "slurm": Where(frozenset(NODE_CONFIG_KEYS), batch=True, sized=True),
    "kubernetes": Where(frozenset(KUBE_NODE_CONFIG_KEYS), burst=True, sized=True),
    "login": Where(frozenset(LOGIN_HEAD_KEYS), on_login=True, worker=False),
}
DEFAULT_BACKEND = "slurm"  # a worker type without node_config.backend
# Where a head runs, by provider.head_mode: on the login node, or as a batch job.
HEAD_BACKENDS = {"login": "login", "slurm": "slurm"}

RESERVED_SBATCH = {
    "--job-name", "--output", "--error", "--nodes", "--ntasks", "--cpus-per-task", "--mem",
    "--partition", "--account", "--qos", "--time", "--constraint", "--gres", "--gpus",
    "--export", "--parsable", "--wrap", "--array", "--reservation", "--exclusive",
    "--mem-per-cpu", "--mem-per-gpu", "--gpus-per-node", "--gpus-per-task", "--cpus-per-gpu",
    "--signal", "--chdir",
}  # fmt: skip
RAY_RESOURCE_KEYS = {"CPU", "GPU", "memory", "object_store_memory"}


class ConfigError(ValueError):
    """The cluster config is wrong; the message lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid ray-slurm config:\n  - " + "\n  - ".join(problems))


def parse_size(value: Any, where: str) -> int:
    """A memory size in bytes; a bare number means MiB, as in SLURM's --mem."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where}: expected a size like 4G or 4000M, got {value!r}")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError(f"{where}: size must be positive, got {value!r}")
        return int(value * 1024**2)
    match = SIZE_RE.match(str(value).strip())
    if not match:
        raise ValueError(f"{where}: expected a size like 4G or 4000M, got {value!r}")
    number = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if number <= 0:
        raise ValueError(f"{where}: size must be positive, got {value!r}")
    return int(number)


@dataclass(frozen=True)
class NodeTypeSpec:
    """One node type, resolved: its SLURM request and the Ray resources that match it."""

    name: str
    kind: str  # "head" or "worker"
    backend: str  # "slurm" (a batch job), "login" (a process on the login node), "kubernetes"
    resources: dict[str, float]
    cpus: int = 0
    memory_mb: int = 0
    gpus: int = 0
    object_store_bytes: int | None = None
    slurm: dict[str, str] = field(default_factory=dict)  # partition, account, ...
    exclusive: bool = False
    sbatch_options: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    time_s: float | None = None  # the job's time limit (node_config.time); None = site default
    pending_timeout_s: int | None = None  # None = provider.pending_timeout_s
    walltime_warning_s: int = DEFAULT_WALLTIME_WARNING_S
    # How long before a busy worker's time limit its replacement is queued (``rollover``);
    # None: derived from the type's observed start; 0: no roll-over.
    rollover_lead_s: int | None = None
    pod: PodOptions | None = None  # Kubernetes types: image, namespace, scheduling hints
    complete: bool = True  # False: the type has problems, this is what could be told of it

    @property
    def burst(self) -> bool:
        """Its nodes are used only while the SLURM types cannot deliver (Kubernetes pods)."""
        return BACKENDS[self.backend].burst

    @property
    def batch(self) -> bool:
        """Its nodes are SLURM batch jobs: sbatch options, partitions and time limits apply."""
        return BACKENDS[self.backend].batch

    @property
    def custom_resources(self) -> dict[str, float]:
        return {k: v for k, v in self.resources.items() if k not in RAY_RESOURCE_KEYS}


def _reserved(option: str) -> bool:
    """sbatch accepts any unambiguous prefix of a long option (--part = --partition)."""
    return len(option) > 3 and any(r.startswith(option) for r in RESERVED_SBATCH)


def count_field(value: Any, where: str, problems: list[str], minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        problems.append(f"{where}: expected a whole number, got {value!r}")
        return None
    if value < minimum:
        problems.append(f"{where}: must be >= {minimum}, got {value!r}")
        return None
    return int(value)


def _agree(
    name: str, request: int | None, resource: Any, key: str, slurm_key: str, problems: list[str]
) -> int | None:
    """The SLURM request and Ray's view of it must be the same number; either may be omitted."""
    res = count_field(resource, f"available_node_types.{name}.resources.{key}", problems)
    if request is not None and res is not None and request != res:
        problems.append(
            f"available_node_types.{name}: resources.{key}={res} disagrees with "
            f"node_config.{slurm_key}={request} (the job would request one and Ray use the other)"
        )
    return request if request is not None else res


def resolve_node_type(name: str, type_cfg: Mapping[str, Any], kind: str, backend: str,
                      problems: list[str], namespace: str = DEFAULT_NAMESPACE,
                      expect: str | None = None) -> NodeTypeSpec | None:  # fmt: skip
    """Check one node type; append problems, return the resolved spec if it is valid.
    ``expect``: the head's versions for a Kubernetes type's image (``check_pod_options``)."""
    before = len(problems)
    where = f"available_node_types.{name}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"{where}: node type name {name!r} must match {NAME_RE.pattern}")
    node_config = type_cfg.get("node_config") or {}
    resources = dict(type_cfg.get("resources") or {})
    if not isinstance(node_config, Mapping):
        problems.append(f"{where}.node_config: expected a mapping, got {node_config!r}")
        return None
    where_it_runs = BACKENDS[backend]
    for key in sorted(set(node_config) - where_it_runs.keys):
        hint = (
            " (the head runs on the login node: provider.head_mode is 'login')"
            if (where_it_runs.on_login and key in NODE_CONFIG_KEYS)
            else ""
        )
        problems.append(f"{where}.node_config: unknown key {key!r}{hint}")

    slurm = {}
    for key in sorted(SLURM_KEYS & set(node_config)):
        value = str(node_config[key])
        if not SLURM_VALUE_RE.match(value):
            problems.append(f"{where}.node_config.{key}: invalid value {value!r}")
        else:
            slurm[key] = value
    time_s = None
    if "time" in slurm:
        try:
            time_s = parse_duration(slurm["time"])
        except ValueError:
            problems.append(f"{where}.node_config.time: {slurm['time']!r} is not a SLURM time "
                            "(minutes, HH:MM:SS or D-HH:MM:SS)")  # fmt: skip
    pending_timeout = count_field(
        node_config.get("pending_timeout_s"), f"{where}.node_config.pending_timeout_s", problems, 1
    )
    warning = count_field(
        node_config.get("walltime_warning_s"), f"{where}.node_config.walltime_warning_s", problems
    )
    if warning is not None and time_s is not None and warning >= time_s:
        problems.append(f"{where}.node_config.walltime_warning_s: {warning} s is not shorter "
                        f"than the time limit {slurm['time']}")  # fmt: skip
    lead = count_field(
        node_config.get("rollover_lead_s"), f"{where}.node_config.rollover_lead_s", problems
    )
    if lead and time_s is not None and lead >= time_s:
        problems.append(f"{where}.node_config.rollover_lead_s: {lead} s is not shorter than the "
                        f"time limit {slurm['time']} (0 turns roll-over off)")  # fmt: skip

    options = node_config.get("sbatch_options") or []
    if not isinstance(options, list):
        problems.append(f"{where}.node_config.sbatch_options: expected a list, got {options!r}")
        options = []
    for opt in options:
        if not isinstance(opt, str) or not SBATCH_OPTION_RE.match(opt):
            problems.append(
                f"{where}.node_config.sbatch_options: invalid option {opt!r} "
                "(expected --name or --name=value, no spaces or quotes)"
            )
        elif _reserved(opt.split("=")[0]):
            problems.append(
                f"{where}.node_config.sbatch_options: {opt!r} is set by ray-slurm; "
                "use the node_config key for it"
            )

    setup = node_config.get("setup") or []
    if not isinstance(setup, list) or not all(isinstance(s, str) and "\0" not in s for s in setup):
        problems.append(f"{where}.node_config.setup: expected a list of shell lines, got {setup!r}")
        setup = []

    for key, value in resources.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z0-9_.:/-]+$", key):
            problems.append(f"{where}.resources: invalid resource name {key!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{where}.resources.{key}: expected a number >= 0, got {value!r}")

    cpus = count_field(node_config.get("cpus"), f"{where}.node_config.cpus", problems, 1)
    gpus = count_field(node_config.get("gpus"), f"{where}.node_config.gpus", problems)
    cpus = _agree(name, cpus, resources.get("CPU"), "CPU", "cpus", problems)
    gpus = _agree(name, gpus, resources.get("GPU"), "GPU", "gpus", problems) or 0
    if gpus and "gres" in slurm and "gpu" in slurm["gres"]:
        problems.append(f"{where}.node_config: give GPUs either as gpus or in gres, not both")

    object_store = None
    if "object_store_memory" in node_config:
        try:
            object_store = parse_size(
                node_config["object_store_memory"], f"{where}.node_config.object_store_memory"
            )
        except ValueError as exc:
            problems.append(str(exc))

    memory_mb = 0
    if where_it_runs.sized:
        if cpus is None or cpus < 1:
            problems.append(f"{where}: set node_config.cpus (or resources.CPU) to at least 1")
        if "memory" not in node_config:
            problems.append(
                f"{where}.node_config.memory: required for a {backend} node type "
                "(the job's or pod's memory; Ray would otherwise assume the whole host)"
            )
        else:
            try:
                mem = parse_size(node_config["memory"], f"{where}.node_config.memory")
                memory_mb = max(1, mem // 1024**2)
                if object_store is None:
                    object_store = int(mem * DEFAULT_OBJECT_STORE_FRACTION)
                heap = resources.get("memory", mem - object_store)
                if object_store >= mem:
                    problems.append(
                        f"{where}.node_config.object_store_memory: "
                        f"{node_config['object_store_memory']} leaves no memory of "
                        f"node_config.memory ({node_config['memory']}) for tasks"
                    )
                elif object_store < MIN_OBJECT_STORE_BYTES:
                    problems.append(
                        f"{where}: object store of {object_store} bytes is below "
                        f"Ray's minimum {MIN_OBJECT_STORE_BYTES}; raise memory"
                    )
                elif isinstance(heap, int | float) and heap + object_store > mem:
                    problems.append(
                        f"{where}: resources.memory={int(heap)} plus the object store "
                        f"({object_store}) exceed node_config.memory "
                        f"({node_config['memory']})"
                    )
                else:
                    resources.setdefault("memory", int(heap))
            except ValueError as exc:
                problems.append(str(exc))
    pod = None
    if where_it_runs.burst:
        pod = check_pod_options(name, node_config, namespace, problems, expect)
    if (
        object_store is not None
        and object_store < MIN_OBJECT_STORE_BYTES
        and where_it_runs.on_login
    ):
        problems.append(
            f"{where}.node_config.object_store_memory: below Ray's minimum "
            f"{MIN_OBJECT_STORE_BYTES} bytes"
        )

    if len(problems) > before:
        return None
    resources["CPU"] = cpus or 0
    if gpus:
        resources["GPU"] = gpus
    return NodeTypeSpec(
        name=name, kind=kind, backend=backend, resources=resources, cpus=cpus or 0,
        memory_mb=memory_mb, gpus=gpus, object_store_bytes=object_store, slurm=slurm,
        exclusive=bool(node_config.get("exclusive", False)), sbatch_options=tuple(options),
        setup=tuple(setup), time_s=time_s, pending_timeout_s=pending_timeout,
        walltime_warning_s=DEFAULT_WALLTIME_WARNING_S if warning is None else warning, pod=pod,
        rollover_lead_s=lead,
    )  # fmt: skip
