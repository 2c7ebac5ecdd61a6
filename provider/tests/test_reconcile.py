"""The state file against what the backends list: drop the gone, adopt the unknown."""

from __future__ import annotations

import time

from ray.autoscaler.tags import (
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from ray_slurm.backends.nodes import JobState, Node
from ray_slurm.cluster.reconcile import nodes_in_state, reconcile


def job(node_id: str, kind: str = "worker", node_type: str = "cpu") -> Node:
    return Node(node_id, "slurm", kind, node_type, JobState.RUNNING, "n1")


def record(cluster, node_id: str, created: float, backend: str = "slurm", **tags: str) -> None:
    with cluster.update() as state:
        state["nodes"][node_id] = {"backend": backend, "created": created,
                                   "tags": {TAG_RAY_USER_NODE_TYPE: "cpu", **tags}}  # fmt: skip


def test_listed_nodes_keep_the_tags_ray_set(cluster):
    cluster.create()
    record(cluster, "10", time.time() - 60, **{TAG_RAY_NODE_STATUS: "custom"})
    tags, created = reconcile(cluster, "example", {"10": job("10")}, time.time())
    assert tags == {"10": {TAG_RAY_USER_NODE_TYPE: "cpu", TAG_RAY_NODE_STATUS: "custom"}}
    assert set(created) == {"10"}


def test_a_node_no_longer_listed_is_dropped(cluster):
    cluster.create()
    record(cluster, "10", time.time() - 60)
    tags, created = reconcile(cluster, "example", {}, time.time())
    assert tags == {} and created == {}
    assert cluster.read_state()["nodes"] == {}


def test_a_node_launched_after_the_listing_began_is_kept(cluster):
    """Its job may not be in squeue's answer yet: dropping it would orphan it."""
    cluster.create()
    listed_after = time.time()
    record(cluster, "11", listed_after + 1)
    _, created = reconcile(cluster, "example", {}, listed_after)
    assert set(created) == {"11"}
    assert "11" in cluster.read_state()["nodes"]


def test_nothing_is_dropped_when_a_backend_could_not_be_listed(cluster):
    cluster.create()
    record(cluster, "10", time.time() - 60)
    reconcile(cluster, "example", {}, time.time(), prune=False)
    assert "10" in cluster.read_state()["nodes"]


def test_an_unknown_node_is_adopted_with_tags_recovered_from_its_backend(cluster):
    cluster.create()
    tags, created = reconcile(cluster, "example", {"7": job("7", "head", "big")}, time.time())
    assert tags["7"] == {
        TAG_RAY_NODE_KIND: "head",
        TAG_RAY_USER_NODE_TYPE: "big",
        TAG_RAY_NODE_NAME: "ray-example-head",
        TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
    }
    entry = cluster.read_state()["nodes"]["7"]
    assert entry["backend"] == "slurm" and entry["tags"] == tags["7"]
    assert created["7"] == entry["created"]


def test_the_state_stands_in_for_an_unreachable_backend(cluster):
    cluster.create()
    record(cluster, "10", 1.0, **{TAG_RAY_NODE_KIND: "worker"})
    record(cluster, "pod-1", 1.0, backend="kubernetes", **{TAG_RAY_NODE_KIND: "worker"})
    nodes = nodes_in_state(cluster, "slurm")
    assert [(n.node_id, n.kind, n.node_type, n.state) for n in nodes] == [
        ("10", "worker", "cpu", JobState.PENDING)
    ]
    assert nodes[0].reason == "slurm unreachable"
