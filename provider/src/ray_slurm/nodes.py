"""What a Ray node is to the provider, whatever runs it: its id, kind, type and state.

Every backend (``backends/``) reports its nodes as ``Node``; the provider, the reconciliation
and the watch read only these fields, never a backend's own objects (squeue lines, pods).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class JobState(enum.Enum):
    """What the state of a job (or pod, or process) means for the Ray node it carries."""

    PENDING = "pending"  # exists, not (yet) running: queued, configuring, suspended, held
    RUNNING = "running"
    STOPPING = "stopping"  # completing: still holds its allocation, must not be forgotten
    GONE = "gone"  # terminal: the job no longer holds anything


@dataclass(frozen=True)
class Node:
    """A node as its backend sees it right now."""

    node_id: str
    backend: str  # the name of the backend that runs it (backends.make's keys)
    kind: str  # "head" or "worker"
    node_type: str
    state: JobState
    host: str = ""  # SLURM node name (or login host, or Kubernetes node) once placed
    reason: str = ""  # why it is pending, in the backend's words
    time_left: str = ""  # as the backend writes it (SLURM: squeue's %L)
    ip: str = ""  # the node's address when the backend knows it (a pod's IP)
    time_left_s: float | None = None  # seconds until its time limit; None: none (or pending)
    what: str = "node"  # what the node is to its backend, for messages: a job, a pod, a process
