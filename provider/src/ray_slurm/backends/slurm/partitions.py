"""Partitions as ``sinfo`` reports them: whether a node type could ever run in one.

``ray-slurm check`` asks SLURM once for every partition and the shapes of its nodes, and names a
node type that no node of its partition could ever hold, before any job of it pends for ever.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeShape:
    """Nodes of a partition that look alike: CPUs, memory (MB), GPUs and a usable state."""

    cpus: int
    memory_mb: int
    gpus: int
    usable: bool  # idle, mixed, allocated or completing: can run (or will free up for) jobs


@dataclass(frozen=True)
class Partition:
    """One partition as ``sinfo`` reports it."""

    name: str
    available: str  # sinfo %a: up, down, drain, inact
    default: bool
    shapes: tuple[NodeShape, ...]

    def fits(self, cpus: int, memory_mb: int, gpus: int) -> bool:
        """Whether one usable node of this partition could ever hold such a job."""
        return any(
            s.usable and s.cpus >= cpus and s.memory_mb >= memory_mb and s.gpus >= gpus
            for s in self.shapes
        )


# sinfo node states that can run jobs now or once they free up (suffixes like ~ # @ stripped;
# a trailing * means "not responding" and is not usable).
_USABLE_NODE_STATES = {"idle", "mix", "mixed", "alloc", "allocated", "comp", "completing"}


def _gres_gpus(gres: str) -> int:
    """GPUs in a sinfo %G value such as ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``(null)``."""
    total = 0
    for item in gres.split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def parse_sinfo_partitions(text: str) -> dict[str, Partition]:
    """Parse ``sinfo --noheader -o '%P|%a|%c|%m|%G|%t'`` (one line per group of alike nodes)."""
    found: dict[str, tuple[str, bool, list[NodeShape]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 6:
            raise ValueError(f"cannot parse sinfo line {line!r}")
        name, available, cpus, memory, gres, state = parts
        default = name.endswith("*")
        name = name.rstrip("*")
        try:
            shape = NodeShape(int(cpus.rstrip("+")), int(memory.rstrip("+")), _gres_gpus(gres),
                              state.rstrip("~#!%$@^-") in _USABLE_NODE_STATES)  # fmt: skip
        except ValueError:
            raise ValueError(f"cannot parse sinfo line {line!r}") from None
        entry = found.setdefault(name, (available, default, []))
        entry[2].append(shape)
    return {n: Partition(n, a, d, tuple(s)) for n, (a, d, s) in found.items()}
