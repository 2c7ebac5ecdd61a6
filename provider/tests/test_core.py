"""``Core.decide``: what one listing's news leads to, before anything is carried out."""

from __future__ import annotations

import time

from ray_slurm.backends.nodes import Ended, JobState, Node
from ray_slurm.cluster.core import Core, News
from ray_slurm.cluster.policy import TypeBackoff
from ray_slurm.cluster.watch import NodeWatch


def job(node_id: str, state: JobState = JobState.RUNNING, reason: str = "") -> Node:
    return Node(node_id, "slurm", "worker", "cpu", state, reason=reason, what="job")


def core(settings, cluster) -> Core:
    watch = NodeWatch(settings, cluster.create(), TypeBackoff())
    return Core(settings, cluster, {}, watch, autoscaling=None)


def test_ends_are_told_and_only_the_types_fault_backs_off(settings, cluster):
    failed = Ended(job("1"), "job 1 ended FAILED", failed=True, types_fault=True)
    lost = Ended(job("2"), "job 2 ended NODE_FAIL", failed=True, lost=True)
    news = News({}, {}, complete=True, ended=[failed, lost], leftovers={"slurm": ["3"]})
    decisions = core(settings, cluster).decide(news)
    assert decisions.told == [failed, lost]
    assert decisions.back_off == [("cpu", "job 1 ended FAILED")]
    assert decisions.remove == {"slurm": ["3"]}
    assert decisions.drain == []  # only the head's autoscaler talks to the GCS
    assert decisions.held is None  # nor writes the autoscaling config


def test_a_worker_pending_too_long_is_given_up_only_on_a_complete_listing(settings, cluster):
    """A listing where a backend did not answer decides nothing from what it did not see."""
    waiting = job("4", JobState.PENDING, "Resources")
    created = {"4": time.time() - settings.pending_timeout(settings.spec("cpu")) - 1}
    the_core = core(settings, cluster)
    assert the_core.decide(News({"4": waiting}, created, complete=False)).remove == {}
    decisions = the_core.decide(News({"4": waiting}, created, complete=True))
    assert decisions.remove == {"slurm": ["4"]}
    [(node_type, why)] = decisions.back_off
    assert node_type == "cpu" and "(Resources)" in why
