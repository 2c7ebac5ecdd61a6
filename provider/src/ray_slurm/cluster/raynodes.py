"""What the head's GCS knows of the cluster's nodes: which have joined, and stopping lost ones.

``joined`` tells the provider which of its jobs and pods are in the Ray cluster (their Ray nodes
carry the cloud instance id), so that it can pace the ones still starting (``policy.start_room``).

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
