"""How many nodes of a type may start at once: Ray's ``upscaling_speed``, counted on Ray's nodes.

Ray documents ``upscaling_speed`` as the number of nodes allowed to be pending as a multiple of
the nodes running (at least 5). Its autoscaler v2 applies it only to launch requests it has not
seen answered; a job is submitted in a second, so it would ask for ``upscaling_speed`` × joined
more nodes every tick, and a scale-out of tens of nodes would have them all start together, each
`ray start` racing Ray's fixed 30 s to register with a head busy registering the others (on 32
one-CPU nodes of two cores they did not make it: docs/benchmarks.md, j). The provider counts,
per type, its jobs and pods not yet in the Ray cluster (the GCS names the ones that joined by
their cloud instance id) against those in it, and launches no more than ``policy.start_room``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ray_slurm.backends.nodes import JobState, Node
from ray_slurm.cluster import raynodes
from ray_slurm.cluster.policy import DEFAULT_UPSCALING_SPEED, start_room

logger = logging.getLogger(__name__)


class StartPace:
    """Per type: its nodes starting and joined, and how many more may start now."""

    def __init__(self) -> None:
        self._said: dict[str, tuple[int, int]] = {}  # type -> (starting, joined) last logged

    def room(self, node_type: str, nodes: Mapping[str, Node], gcs_address: str, count: int,
             cluster_config: Mapping[str, Any]) -> int:  # fmt: skip
        """How many of ``count`` new nodes of the type may start now. ``nodes``: the cluster's
        nodes (those being terminated left out); ``cluster_config``: the uploaded one, with
        Ray's ``upscaling_speed`` (default ``DEFAULT_UPSCALING_SPEED``). If the GCS does not
        answer, a running job counts as joined (what SLURM knows)."""
        speed = cluster_config.get("upscaling_speed")
        upscaling_speed = DEFAULT_UPSCALING_SPEED if speed is None else float(speed)
        mine = [n for n in nodes.values() if n.node_type == node_type and n.kind == "worker"]
        ids = raynodes.joined(gcs_address)
        if ids is None:
            ids = {n.node_id for n in mine if n.state is JobState.RUNNING}
        joined = sum(n.node_id in ids for n in mine)
        said = (len(mine) - joined, joined)
        room = min(count, start_room(*said, upscaling_speed))
        if room < count and self._said.get(node_type) != said:  # once per change, not per tick
            self._said[node_type] = said
            logger.info("node type %s: %d node(s) starting, %d joined: %d more may start until "
                        "more have joined (upscaling_speed %g)", node_type, *said, room,
                        upscaling_speed)  # fmt: skip
        return room
