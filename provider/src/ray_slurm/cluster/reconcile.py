"""The state file against what the backends list: drop the gone, adopt the unknown.

A node exists while its backend says so (a SLURM job, a pod, the login head's process); the state
only adds the tags Ray set on it. So after every listing, entries of nodes that are gone are
dropped and live nodes the state does not know (a lost or deleted state file) are adopted with
tags recovered from what the backend tells: kind and node type.
"""

from __future__ import annotations

import logging
import time

from ray.autoscaler.tags import (
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from ray_slurm.backends.nodes import JobState, Node
from ray_slurm.host.state import ClusterDir

logger = logging.getLogger(__name__)


Tags = dict[str, dict[str, str]]


def reconcile(
    cluster: ClusterDir,
    cluster_name: str,
    nodes: dict[str, Node],
    listed_after: float,
    prune: bool = True,
) -> tuple[Tags, dict[str, float]]:
    """Tags of the listed nodes, and when each known node was created.

    ``prune`` is False when a backend could not be listed: then nothing is dropped. An entry
    created after the listing began is never dropped (its node may not be listed yet).
    """
    state = cluster.read_state()
    known = state["nodes"]
    gone = [i for i, e in known.items() if prune and i not in nodes and e["created"] < listed_after]
    adopt = [n for i, n in nodes.items() if i not in known]
    if gone or adopt:
        with cluster.update() as state:
            for node_id in gone:
                state["nodes"].pop(node_id, None)
            for node in adopt:
                if node.node_id not in state["nodes"]:
                    logger.warning(
                        "adopting %s node %s (%s) found in %s without state",
                        *(node.kind, node.node_id, node.node_type, node.backend),
                    )
                    state["nodes"][node.node_id] = {
                        "backend": node.backend, "created": time.time(),
                        "tags": recovered_tags(node, cluster_name),
                    }  # fmt: skip
            known = state["nodes"]
    created = {i: e["created"] for i, e in known.items()}
    return {i: dict(e["tags"]) for i, e in known.items() if i in nodes}, created


def recovered_tags(node: Node, cluster_name: str) -> dict[str, str]:
    return {
        TAG_RAY_NODE_KIND: node.kind,
        TAG_RAY_USER_NODE_TYPE: node.node_type,
        TAG_RAY_NODE_NAME: f"ray-{cluster_name}-{node.kind}",
        TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
    }


def nodes_in_state(cluster: ClusterDir, backend: str) -> list[Node]:
    """The nodes the state says ``backend`` has: used when it cannot be listed (unreachable)."""
    nodes = []
    for node_id, entry in cluster.read_state()["nodes"].items():
        if entry["backend"] == backend:
            tags = entry["tags"]
            nodes.append(Node(node_id, backend, tags.get(TAG_RAY_NODE_KIND, "worker"),
                              tags.get(TAG_RAY_USER_NODE_TYPE, ""), JobState.PENDING,
                              reason=f"{backend} unreachable"))  # fmt: skip
    return nodes
