"""What the provider learns from listings: unseen ends, failing and proven types, overdue nodes."""

from __future__ import annotations

import time

import pytest

from ray_slurm.backends.nodes import START_WINDOW_S, JobState, Node
from ray_slurm.cluster import watch
from ray_slurm.cluster.policy import LaunchRefused, TypeBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(watch.time, "monotonic", clock)
    return clock


@pytest.fixture
def node_watch(settings, cluster, clock):
    return watch.NodeWatch(settings, cluster.create(), TypeBackoff(clock))


def worker(node_id: str, state: JobState = JobState.RUNNING, reason: str = "") -> Node:
    return Node(node_id, "slurm", "worker", "cpu", state, reason=reason, what="job")


def test_a_node_that_ended_before_ray_saw_it_is_listed_once_as_ending(node_watch):
    node_watch.launched(worker("7", JobState.PENDING))
    node_watch.launched(worker("8", JobState.PENDING))
    listed = {"8": worker("8")}
    ended = node_watch.ended_unseen(listed)
    assert list(ended) == ["7"] and ended["7"].state is JobState.STOPPING
    node_watch.reported([*listed, *ended])  # non_terminated_nodes returned them
    assert node_watch.ended_unseen({}) == {}


def test_a_failing_type_is_recorded_for_status_and_proven_by_a_node_that_runs(
    node_watch, cluster, clock
):
    node_watch.type_failed("cpu", "job 7 ended FAILED (exit code 3:0)")
    node_watch.type_failed("cpu", "job 9 ended FAILED (exit code 3:0)")
    record = cluster.read_state()["failures"]["cpu"]
    assert record["count"] == 2 and record["why"] == "job 9 ended FAILED (exit code 3:0)"
    assert record["until"] > record["at"]
    with pytest.raises(LaunchRefused, match="backed off"):
        node_watch.backoff.allowed("cpu", 3, [])
    clock.now += 60
    nodes = {"11": worker("11")}
    node_watch.observe(nodes, {})  # job 11 (the probe) runs from now on
    assert node_watch.unproven("cpu", nodes) == ["11"]
    with pytest.raises(LaunchRefused, match="one node at a time"):
        node_watch.backoff.allowed("cpu", 3, node_watch.unproven("cpu", nodes))
    clock.now += START_WINDOW_S
    node_watch.observe(nodes, {})
    assert not node_watch.backoff.failing("cpu")
    assert "cpu" not in cluster.read_state()["failures"]
    assert node_watch.backoff.allowed("cpu", 3, node_watch.unproven("cpu", nodes)) == 3


def test_a_worker_pending_past_its_timeout_is_overdue(node_watch, settings, cluster):
    """The watch tells which; backing the type off and removing the job is the core's."""
    timeout = settings.pending_timeout(settings.spec("cpu"))
    nodes = {"21": worker("21", JobState.PENDING, "Resources"),
             "22": worker("22", JobState.PENDING, "Priority")}  # fmt: skip
    created = {"21": time.time() - timeout - 5, "22": time.time()}
    [(node, why)] = node_watch.observe(nodes, created)
    assert node is nodes["21"] and why.startswith("job 21 waited") and "(Resources)" in why
    assert "failures" not in cluster.read_state()
