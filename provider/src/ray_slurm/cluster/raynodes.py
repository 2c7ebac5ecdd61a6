"""What the head's GCS knows of the cluster's nodes: which have joined, which are busy, and
draining or stopping them.

``joined`` tells the provider which of its jobs and pods are in the Ray cluster (their Ray nodes
carry the cloud instance id), so that it can pace the ones still starting (``policy.start_room``);
``activity`` which of them are busy, idle or draining (roll-over replaces only busy workers).

Draining a node with a deadline (``drain``, run by a worker's own job when its end is near:
``rollover``): Ray's ``DrainNode`` with reason PREEMPTION makes the raylet accept no new work at
once, lets running tasks go on until the deadline, and ends the raylet by itself once it is
idle (Ray 2.60; a later drain of the same node replaces the deadline). Killing the node at the
deadline is the caller's part.

Stopping the Ray nodes of SLURM jobs that are lost while their processes may live on:

A job whose node stops answering (slurmd dead, network cut) ends NODE_FAIL in slurmctld, but
nothing on the node kills its processes until slurmd returns: its raylet stays in the Ray
cluster, offering CPUs that no allocation holds. A requeued or suspended job's Ray node is gone
or frozen too. The head's autoscaler asks the GCS to stop each Ray node whose cloud instance id
(``RAY_CLOUD_INSTANCE_ID``, the job id) names such a job, as Ray's own autoscaler stops a node:
Ray then neither counts nor uses it, and starts a replacement if demand remains.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

logger = logging.getLogger(__name__)

GCS_TIMEOUT_S = 10


def _alive_workers(client: Any) -> dict[str, str]:
    """The alive Ray worker nodes the GCS knows: Ray node id (hex) -> cloud instance id."""
    from ray.core.generated.gcs_pb2 import GcsNodeInfo  # type: ignore[attr-defined]

    infos = client.get_all_node_info(timeout=GCS_TIMEOUT_S,
                                     state_filter=GcsNodeInfo.GcsNodeState.ALIVE)  # fmt: skip
    return {node_id.hex(): info.instance_id for node_id, info in infos.items()
            if not info.is_head_node}  # fmt: skip


def _client(gcs_address: str) -> Any:
    # The autoscaler has Ray imported already. It is compiled (Cython): no stubs.
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    return GcsClient(address=gcs_address)


def joined(gcs_address: str) -> set[str] | None:
    """The cloud instance ids (job ids, pod names) of the alive Ray worker nodes: the nodes that
    have joined the cluster. None if the GCS did not answer."""
    try:
        return set(_alive_workers(_client(gcs_address)).values())
    except Exception as exc:  # busy or gone: the caller falls back on what SLURM says
        logger.info("could not ask the GCS which nodes have joined: %s", exc)
        return None


def activity(gcs_address: str) -> dict[str, str] | None:
    """The alive worker nodes' cloud instance ids -> "busy", "idle" or "draining" (the
    autoscaler's view of the GCS); None if the GCS did not answer."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_resource_state
        from ray.core.generated.autoscaler_pb2 import NodeStatus  # type: ignore[attr-defined]

        state = get_cluster_resource_state(_client(gcs_address))
    except Exception as exc:  # busy or gone: the caller decides without it
        logger.info("could not ask the GCS which nodes are busy: %s", exc)
        return None
    words = {NodeStatus.RUNNING: "busy", NodeStatus.IDLE: "idle", NodeStatus.DRAINING: "draining"}
    return {node.instance_id: words[node.status] for node in state.node_states
            if node.instance_id and node.status in words}  # fmt: skip


def drain(gcs_address: str, instance_id: str, message: str, deadline_s: float) -> str:
    """Drain this job's Ray node (reason PREEMPTION) until ``deadline_s`` (epoch seconds);
    returns its Ray node id (hex). Raises RuntimeError if the GCS refuses or knows no such node."""
    from ray.core.generated.autoscaler_pb2 import DrainNodeReason  # type: ignore[attr-defined]

    client = _client(gcs_address)
    ours = [ray_node for ray_node, instance in _alive_workers(client).items()
            if instance == instance_id]  # fmt: skip
    if not ours:
        raise RuntimeError(f"the GCS at {gcs_address} knows no alive Ray node of {instance_id}")
    accepted, refused = client.drain_node(ours[0], DrainNodeReason.DRAIN_NODE_REASON_PREEMPTION,
                                          message, int(deadline_s * 1000))  # fmt: skip
    if not accepted:
        raise RuntimeError(f"the GCS refused to drain Ray node {ours[0][:12]}: {refused}")
    return str(ours[0])


def stop_ray_nodes(gcs_address: str, instance_ids: Collection[str]) -> list[str]:
    """Stop the alive Ray nodes of these jobs; returns the Ray node ids stopped (hex)."""
    client = _client(gcs_address)
    try:
        found = {ray_node: instance for ray_node, instance in _alive_workers(client).items()
                 if instance in instance_ids}  # fmt: skip
        if found:
            client.drain_nodes([bytes.fromhex(h) for h in found], timeout=GCS_TIMEOUT_S)
    except Exception as exc:  # the GCS is busy or gone: say so, the provider goes on
        logger.warning("could not stop the Ray nodes of lost jobs %s (they run on until their "
                       "node's slurmd ends them): %s", ", ".join(instance_ids), exc)  # fmt: skip
        return []
    for ray_node, job_id in found.items():
        logger.warning("stopped Ray node %s of lost job %s", ray_node[:12], job_id)
    return list(found)
