"""Burst policy: SLURM first, Kubernetes pods only while SLURM cannot deliver.

Ray's autoscaler v2 picks node types by fit, then availability, then ``priority``, and learns of
unavailability only from its own allocation timeouts: it would keep asking for a SLURM type the
provider has backed off, and would use a pod type even while SLURM has room. So the provider
tells it, in the one way it reads every loop: the autoscaling config. The head's autoscaler reads
``<cluster>/autoscaling.yaml``, which the provider keeps equal to the bootstrap config that
``ray up`` uploads, except that a type that must not grow now has ``max_workers`` (and
``min_workers``) set to the number of nodes it has. Such a type is:

* a type backed off (its jobs pended past ``pending_timeout_s``, sbatch rejected it, its pods
  never started): until the back-off ends;
* a Kubernetes type, while no SLURM worker type is unavailable (backed off, or at its own
  ``max_workers``): SLURM goes first. Pods that exist are kept until idle; burst types get a
  short ``idle_timeout_s`` so that they are the first to go.

A limit is never below the current count, so Ray never terminates a node because of it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from ray_slurm.config import Settings
from ray_slurm.host.state import write_private

logger = logging.getLogger(__name__)

AUTOSCALING_CONFIG_ENV = "RAY_SLURM_AUTOSCALING_CONFIG"  # set in the head job for its autoscaler


def bursting(settings: Settings, max_workers: Mapping[str, int], counts: Mapping[str, int],
             unavailable: Collection[str]) -> bool:  # fmt: skip
    """True while some first-choice (SLURM) worker type cannot grow, or there is none: burst
    types may be used."""
    first = [s.name for s in settings.node_types.values() if s.kind == "worker" and not s.burst]
    if not first:
        return True
    return any(t in unavailable or counts.get(t, 0) >= max_workers.get(t, 0) for t in first)


def limits(settings: Settings, max_workers: Mapping[str, int], counts: Mapping[str, int],
           unavailable: Collection[str]) -> dict[str, int]:  # fmt: skip
    """The worker types that must not grow now, each with its current number of nodes."""
    burst = bursting(settings, max_workers, counts, unavailable)
    held = {}
    for spec in settings.node_types.values():
        if spec.kind != "worker":
            continue
        closed = spec.name in unavailable or (spec.burst and not burst)
        if closed and counts.get(spec.name, 0) < max_workers.get(spec.name, 0):
            held[spec.name] = counts.get(spec.name, 0)
    return held


def effective_config(bootstrap: dict[str, Any], held: Mapping[str, int]) -> dict[str, Any]:
    """The bootstrap config with the held types' limits applied."""
    config = copy.deepcopy(bootstrap)
    for name, count in held.items():
        node_type = config.get("available_node_types", {}).get(name)
        if node_type is not None:
            node_type["max_workers"] = count
            node_type["min_workers"] = min(int(node_type.get("min_workers", 0) or 0), count)
    return config


def max_workers_of(bootstrap: Mapping[str, Any]) -> dict[str, int]:
    return {name: int(t.get("max_workers", 0) or 0)
            for name, t in (bootstrap.get("available_node_types") or {}).items()}  # fmt: skip


class AutoscalingConfig:
    """Keeps ``autoscaling.yaml`` = bootstrap config + limits; writes only when it changes."""

    def __init__(self, bootstrap_path: Path, path: Path) -> None:
        self.bootstrap_path = bootstrap_path
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._bootstrap: dict[str, Any] = {}
        self._written: dict[str, int] | None = None

    def bootstrap(self) -> dict[str, Any]:
        """The uploaded config, re-read only when `ray up` replaced it."""
        stat = self.bootstrap_path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            with open(self.bootstrap_path) as f:
                self._bootstrap = yaml.safe_load(f) or {}
            self._stamp = stamp
            self._written = None
        return self._bootstrap

    def update(self, held: Mapping[str, int]) -> bool:
        """Write the effective config if the limits (or the bootstrap config) changed."""
        bootstrap = self.bootstrap()
        if self._written == dict(held) and self.path.exists():
            return False
        text = yaml.safe_dump(effective_config(bootstrap, held), sort_keys=False)
        write_private(self.path, text)
        if held != (self._written or {}):
            sizes = ", ".join(f"{t}={n}" for t, n in sorted(held.items())) or "none"
            logger.info("node types held at their current size: %s", sizes)
        self._written = dict(held)
        return True
