"""What a Ray node is to the provider, whatever runs it: its id, kind, type and state.

Every backend (``backends/``) reports what it sees as data: its nodes as ``Node``, and the nodes
that ended since its last look as ``Ended`` (``Seen`` holds both). The core (``core``), the
reconciliation and the watch read only these fields, never a backend's own objects (squeue
lines, pods), and a backend decides nothing from what it sees: the core does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# How a backend tells a failure at start (``Ended.types_fault``), and how a node's script says
# why it ended:
# A node that ends sooner than this after it started died at start (its type is broken); one that
# has run this long proves that its type works again.
START_WINDOW_S = 120.0
# A node's script exits with this (EX_TEMPFAIL) when another account held one of its Ray ports:
# the job ended at start, but not for its type's fault: it is replaced, its type not backed off.
PORTS_TAKEN_EXIT = 75
# A worker's script exits with this when its Ray timed out during startup in every attempt it
# made in its allocation (``jobscript.START_ATTEMPTS``): a failure at start, however long the
# attempts took together.
START_FAILED_EXIT = 76
# A worker drained because its job's end is near (``cluster.rollover``) must be done this long
# before that end, so that its script stops Ray (its stop grace) and cleans up before SLURM's kill.
DRAIN_STOP_MARGIN_S = 20


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


@dataclass(frozen=True)
class Ended:
    """A node its backend saw end, reported once, with what that means for the cluster.

    The backend says what happened (it alone can read a job's end or a pod's status); what to
    do about it (back the type off, drain the Ray node, remove what is left) is the core's.
    """

    node: Node  # as last seen (id, backend, kind, type)
    # How it ended, in the backend's words (SLURM's record and the log's last lines); an end
    # that is no failure (a requeue) says the whole sentence, a failure what happened.
    why: str
    failed: bool = False  # it did not end as a cluster expects (scale-down, `ray down`, limit)
    types_fault: bool = False  # it failed at start through its type: the type is backed off
    lost: bool = False  # taken from under a running Ray node, whose processes may live on


@dataclass(frozen=True)
class Seen:
    """One look of a backend: its nodes, what ended since its last look, and what is left of
    nodes that are no longer nodes (a requeued job, an ended pod), which the core removes."""

    nodes: list[Node]
    ended: list[Ended] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # ids, removed with the backend's verb
