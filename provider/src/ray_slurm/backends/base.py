"""The one interface between the provider and whatever runs its nodes.

A backend launches nodes of a type, drains and terminates them and removes what it created
besides nodes: those verbs are the only ones that act. Its listing only looks: it reports its
nodes and what ended since its last look as data (``nodes.Seen``), and the core decides what
follows.
It also tells a node's address, gives Ray a way to run commands on a node and shows what a
launch would submit. The provider and the CLI hold backends only through this interface
(``backends.make`` builds them): they never ask which backend they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ray_slurm.backends.nodes import Node, Seen
from ray_slurm.config import NodeTypeSpec, Settings

if TYPE_CHECKING:  # Ray's command runners: a backend imports them only when Ray asks for one
    from ray_slurm.backends.command_runner import CommandContext, LocalCommandRunner


@dataclass(frozen=True)
class LaunchRequest:
    """One node to start: its type and what it must know about the cluster."""

    spec: NodeTypeSpec
    head_address: str = ""  # workers: the head's GCS address
    time_limit_minutes: int | None = None  # SLURM workers: end before the head's job does


@dataclass(frozen=True)
class Preview:
    """What launching one node of a type submits, for ``ray-slurm render``."""

    how: str  # e.g. "sbatch --parsable <path>", "a Kubernetes pod"
    text: str  # the job script, or the pod manifest as YAML
    file_name: str = ""  # the script's name in the jobs directory; "" if nothing is written


class Backend(Protocol):
    name: str  # the node types' ``backend`` (NodeTypeSpec.backend), and Node.backend
    noun: str  # what one node is to it, for messages: a job, a pod, a process
    settings: Settings  # replaced when `ray up` uploads a new config to a running cluster

    def list_nodes(self) -> Seen:
        """Every node of this cluster the backend has (not the ones that are gone), and what
        ended since the last call; it changes nothing (reading records of an end is allowed)."""
        ...

    def launch(self, request: LaunchRequest) -> str:
        """Start one node; returns its id. Raises BackendError if it could not."""
        ...

    def terminate(self, node_ids: Sequence[str]) -> None: ...

    def drain(self, node_ids: Sequence[str]) -> None:
        """Tell these nodes that their end is near: each drains its Ray node and leaves by its
        end (``cluster.rollover``). Only nodes with an end known in advance (batch jobs)."""
        ...

    def cleanup(self) -> None:
        """After `ray down`: remove whatever else the backend created for the cluster."""
        ...

    def address(self, node: Node) -> str:
        """The address Ray uses for this (placed) node."""
        ...

    def command_runner(self, node_id: str, ctx: CommandContext) -> LocalCommandRunner:
        """How `ray up`/`exec`/`attach` run commands on the node (raises if they cannot)."""
        ...

    def preview(self, spec: NodeTypeSpec, head_address: str) -> Preview:
        """What one launch of ``spec`` would submit (nothing is submitted)."""
        ...
