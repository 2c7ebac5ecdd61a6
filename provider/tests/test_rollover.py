"""Roll-over's rules (``cluster.rollover``): the lead, the drain's deadline, and what one listing
leads to — a replacement queued for a busy worker in its lead, the old worker drained once the
replacement has joined, and the reasons none is queued (idle, max_workers, back-off, the head's
own time limit)."""

from __future__ import annotations

import dataclasses

import pytest

from ray_slurm.backends.nodes import DRAIN_STOP_MARGIN_S, JobState, Node
from ray_slurm.cluster import rollover
from ray_slurm.cluster.rollover import RollOvers
from ray_slurm.config import ConfigError

NOW = 1_000_000.0


def worker(node_id: str, left: float | None, state: JobState = JobState.RUNNING) -> Node:
    return Node(node_id, "slurm", "worker", "cpu", state, time_left_s=left, what="job")


def head(left: float | None) -> Node:
    return Node("900", "login", "head", "head", JobState.RUNNING, time_left_s=left)


def with_lead(make_settings, lead):
    def change(cfg):
        cfg["available_node_types"]["cpu"]["node_config"]["rollover_lead_s"] = lead

    return make_settings(change)


# ------------------------------------------------------------------ the arithmetic


def test_the_lead_is_the_types_own_or_derived_from_its_observed_start(make_settings):
    spec = with_lead(make_settings, 300).spec("cpu")
    assert rollover.lead_s(spec, observed_start_s=1000) == 300  # the type's own wins
    spec = make_settings().spec("cpu")  # 1 h limit, warning 90 s, no lead of its own
    assert rollover.lead_s(spec) == 90 + rollover.DEFAULT_START_S  # nothing observed yet
    assert rollover.lead_s(spec, observed_start_s=30) == 90 + rollover.DEFAULT_START_S
    assert rollover.lead_s(spec, observed_start_s=400) == 90 + 800  # twice the observed start
    # never more than half the job's time limit
    assert rollover.lead_s(spec, observed_start_s=5000) == 1800
    assert rollover.lead_s(with_lead(make_settings, 0).spec("cpu"), 400) == 0  # off


def test_a_lead_as_long_as_the_time_limit_is_refused_naming_it(make_settings):
    with pytest.raises(ConfigError) as err:
        with_lead(make_settings, 3600)
    assert "cpu.node_config.rollover_lead_s: 3600 s is not shorter than the time limit" in str(
        err.value
    )
    with pytest.raises(ConfigError, match="rollover_lead_s: expected a whole number"):
        with_lead(make_settings, "soon")


def test_the_drain_deadline_leaves_the_job_time_to_stop_ray_before_slurms_kill():
    assert rollover.drain_deadline(NOW) == NOW - DRAIN_STOP_MARGIN_S
    assert rollover.due(end=NOW + 300, lead=300, now=NOW)
    assert not rollover.due(end=NOW + 301, lead=300, now=NOW)
    assert not rollover.due(end=NOW + 10, lead=0, now=NOW)  # roll-over off


def test_a_replacement_must_outlive_its_predecessor_by_the_lead_under_the_heads_limit():
    assert rollover.outlives(old_left_s=300, head_left_s=None, lead=300)  # head: no limit
    # the head ends in 1000 s; a new worker is capped to 940 s: 640 s more than the old one
    assert rollover.outlives(old_left_s=300, head_left_s=1000, lead=600)
    assert not rollover.outlives(old_left_s=300, head_left_s=1000, lead=700)
    # head and worker end together (today's cap): no replacement at all
    assert not rollover.outlives(old_left_s=300, head_left_s=360, lead=60)


def test_the_message_says_when_and_why():
    record = rollover.Rollover("41", "cpu", end=NOW + 360, replacement="57", queued_at=NOW,
                               draining_from=NOW + 300)  # fmt: skip
    clock = rollover.clock
    assert record.describe() == (
        f"worker 41 (cpu) ends at {clock(NOW + 360)} (time limit): replacement job 57 queued at "
        f"{clock(NOW)}, draining from {clock(NOW + 300)}"
    )
    waiting = rollover.Rollover("41", "cpu", end=NOW + 360, waiting="it is idle")
    assert waiting.describe().endswith("(time limit): no replacement yet, it is idle")
    assert "preempted job 41" in rollover.drain_message(rollover.REASON_PREEMPTION, "41", NOW)
    assert "job 41 reaches its time limit" in rollover.drain_message(
        rollover.REASON_TIME_LIMIT, "41", NOW
    )


# ------------------------------------------------------------------ one listing's plan


class Gcs:
    """The GCS's answers, and how often each was asked."""

    def __init__(self, activity=None, joined=None):
        self.activity_said = activity
        self.joined_said = joined or set()
        self.asked = 0

    def activity(self):
        self.asked += 1
        return self.activity_said

    def joined(self):
        self.asked += 1
        return self.joined_said


def plan(rolls, settings, nodes, gcs, now=NOW, max_workers=None, total=None, backed_off=()):
    return rolls.plan(settings, {n.node_id: n for n in nodes}, {"57": now - 100}, now,
                      max_workers or {"cpu": 2}, total, backed_off, gcs.activity,
                      gcs.joined)  # fmt: skip


def test_a_busy_worker_in_its_lead_gets_one_replacement_then_drains_once_it_joined(
    make_settings,
):
    settings = with_lead(make_settings, 300)
    rolls = RollOvers()
    gcs = Gcs(activity={"41": "busy"})
    # outside its lead: nothing, and the GCS is not even asked
    assert plan(rolls, settings, [worker("41", 301)], gcs).replace == []
    assert gcs.asked == 0
    first = plan(rolls, settings, [worker("41", 300)], gcs)
    assert [n.node_id for n in first.replace] == ["41"] and first.changed
    rolls.records["41"].replacement, rolls.records["41"].queued_at = "57", NOW  # (queued)
    # the replacement pends: no second one, no drain yet
    pending = plan(rolls, settings, [worker("41", 250), worker("57", None, JobState.PENDING)], gcs)
    assert pending.replace == [] and pending.drain == []
    # it joined: the old worker drains, and the type's start is remembered for its next lead
    gcs.joined_said = {"57"}
    joined = plan(rolls, settings, [worker("41", 200), worker("57", 3600)], gcs, now=NOW + 50)
    assert [n.node_id for n in joined.drain] == ["41"]
    assert rolls.records["41"].draining_from == NOW + 50
    assert rolls.observed_start["cpu"] == 100  # created 100 s before
    # once: draining it is not drained again; gone, it is forgotten
    assert plan(rolls, settings, [worker("41", 150), worker("57", 3550)], gcs).drain == []
    assert plan(rolls, settings, [worker("57", 3500)], gcs).changed
    assert rolls.records == {}


def test_no_replacement_for_an_idle_worker_or_where_the_gcs_is_silent(make_settings):
    settings = with_lead(make_settings, 300)
    rolls = RollOvers()
    assert plan(rolls, settings, [worker("41", 100)], Gcs(activity={"41": "idle"})).replace == []
    assert rolls.records["41"].waiting == "it is idle: nothing to carry over"
    assert plan(rolls, settings, [worker("41", 90)], Gcs(activity=None)).replace == []
    assert "GCS did not say" in rolls.records["41"].waiting
    # busy again later in its lead: now it gets one
    assert plan(rolls, settings, [worker("41", 80)], Gcs(activity={"41": "busy"})).replace


def test_a_worker_draining_already_is_left_to_ray(make_settings):
    """SLURM's warning (or a preemption) drained it first: Ray's autoscaler, which no longer
    counts a draining node, asks for a new one if demand remains; none is queued here."""
    rolls = RollOvers()
    settings = with_lead(make_settings, 300)
    result = plan(rolls, settings, [worker("41", 60)], Gcs(activity={"41": "draining"}))
    assert result.replace == [] and rolls.records["41"].draining_from == NOW


def test_a_lead_that_would_exceed_max_workers_waits_and_says_so(make_settings, caplog):
    settings = with_lead(make_settings, 300)
    rolls = RollOvers()
    busy = Gcs(activity={"41": "busy", "42": "busy"})
    nodes = [worker("41", 200), worker("42", 3000)]
    caplog.set_level("INFO")
    assert plan(rolls, settings, nodes, busy, max_workers={"cpu": 2}).replace == []
    said = "no replacement yet, node type cpu is at its max_workers (2): it waits for room"
    assert said in rolls.records["41"].describe()
    assert caplog.text.count(said) == 1
    plan(rolls, settings, nodes, busy, max_workers={"cpu": 2})
    assert caplog.text.count(said) == 1  # said once per change, not every listing
    assert plan(rolls, settings, nodes, busy, max_workers={"cpu": 3}, total=2).replace == []
    assert "the cluster is at its max_workers (2)" in rolls.records["41"].waiting
    # two workers in their lead, room for one: one replacement
    both = plan(RollOvers(), settings, [worker("41", 200), worker("42", 250)], busy,
                max_workers={"cpu": 3})  # fmt: skip
    assert [n.node_id for n in both.replace] == ["41"]


def test_no_replacement_for_a_backed_off_type_or_past_the_heads_own_limit(make_settings):
    settings = with_lead(make_settings, 300)
    busy = Gcs(activity={"41": "busy"})
    rolls = RollOvers()
    assert plan(rolls, settings, [worker("41", 200)], busy, backed_off={"cpu"}).replace == []
    assert rolls.records["41"].waiting == "node type cpu is backed off"
    rolls = RollOvers()
    assert plan(rolls, settings, [worker("41", 200), head(400)], busy).replace == []
    assert rolls.records["41"].waiting == "the head's own time limit ends the cluster first"
    assert plan(RollOvers(), settings, [worker("41", 200), head(4000)], busy).replace


def test_a_replacement_that_ended_before_it_joined_is_queued_again(make_settings, caplog):
    settings = with_lead(make_settings, 300)
    rolls = RollOvers()
    busy = Gcs(activity={"41": "busy"})
    plan(rolls, settings, [worker("41", 300)], busy)
    rolls.records["41"].replacement, rolls.records["41"].queued_at = "57", NOW
    again = plan(rolls, settings, [worker("41", 250)], busy)  # 57 is gone
    assert "the replacement ended before it joined" in caplog.text
    assert [n.node_id for n in again.replace] == ["41"]


def test_only_running_batch_workers_with_a_time_limit_roll_over(make_settings):
    settings = with_lead(make_settings, 300)
    busy = Gcs(activity={"41": "busy"})
    for node in (worker("41", None), worker("41", 10, JobState.PENDING),
                 dataclasses.replace(head(10), node_id="41")):  # fmt: skip
        assert plan(RollOvers(), settings, [node], busy).replace == []


def test_status_shows_roll_overs_and_draining_nodes_of_listed_nodes(capsys):
    from ray_slurm.cli.status import print_draining

    record = rollover.Rollover("41", "cpu", end=NOW + 360, replacement="57", queued_at=NOW)
    state = {
        "rollovers": {"41": record.record(), "40": record.record()},  # 40: no longer listed
        "nodes": {"41": {"drain": {"reason": rollover.REASON_TIME_LIMIT, "since": NOW + 300,
                                   "deadline": NOW + 340, "end": NOW + 360}},
                  "43": {"drain": {"reason": rollover.REASON_PREEMPTION, "since": NOW,
                                   "deadline": NOW + 10, "end": NOW + 30}}},
    }  # fmt: skip
    print_draining(state, {"41", "43", "57"})
    lines = capsys.readouterr().out.splitlines()
    clock = rollover.clock
    assert lines == [
        "roll-over: " + record.describe(),
        f"draining: 41 since {clock(NOW + 300)} (time limit, its job ends at {clock(NOW + 360)}):"
        f" no new work; running tasks have until {clock(NOW + 340)}",
        f"draining: 43 since {clock(NOW)} (preempted, its job ends at {clock(NOW + 30)}): no new "
        f"work; running tasks have until {clock(NOW + 10)}",
    ]
