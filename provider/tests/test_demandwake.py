"""The head's autoscaler wakes between loops when new demand comes (``demandwake``).

The demand is parsed from real ``ClusterResourceState`` messages; the clock and the GCS are
fakes, so that each test says exactly when the loop's sleep ends.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from ray.core.generated.autoscaler_pb2 import ClusterResourceState, GetClusterResourceStateReply

from ray_slurm.hooks import demandwake
from ray_slurm.hooks.demandwake import DemandAwareTime, demand_of, grew


def state(*shapes: tuple[dict[str, float], int], groups: int = 0, asked: int = 0) -> Any:
    msg = ClusterResourceState()
    for shape, count in shapes:
        pending = msg.pending_resource_requests.add(count=count)
        pending.request.resources_bundle.update(shape)
    for n in range(groups):
        gang = msg.pending_gang_resource_requests.add(details=f"pg{n}")
        gang.requests.add().resources_bundle.update({"CPU": 1.0})
    if asked:
        constraint = msg.cluster_resource_constraints.add()
        want = constraint.resource_requests.add(count=asked)
        want.request.resources_bundle.update({"CPU": 1.0})
    return msg


def test_demand_counts_tasks_per_shape_placement_groups_and_requested_resources():
    demand = demand_of(state(({"CPU": 1.0}, 2), ({"CPU": 1.0, "GPU": 1.0}, 1), groups=1, asked=3))
    assert demand[(("CPU", 1.0),)] == 2
    assert demand[(("CPU", 1.0), ("GPU", 1.0))] == 1
    assert demand[("request_resources", (("CPU", 1.0),))] == 3
    assert sum(1 for key in demand if key[0] == "placement_group") == 1
    assert demand_of(state()) == {}


def test_only_more_demand_counts_as_new():
    one = demand_of(state(({"CPU": 1.0}, 1)))
    assert grew({}, one)
    assert grew(one, demand_of(state(({"CPU": 1.0}, 2))))
    assert grew(one, demand_of(state(({"CPU": 1.0}, 1), ({"GPU": 1.0}, 1))))
    assert not grew(one, one)
    assert not grew(one, {})  # demand met or gone: nothing to act on


class FakeClock:
    """``time`` for the stand-in: sleeping moves the clock; everything is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1e9 + self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def polls(*demands: dict[Any, int] | Exception) -> Iterator[Any]:
    """The GCS's answers, one per poll; the last one repeats."""
    yield from demands
    while True:
        yield demands[-1]


def stand_in(*demands: dict[Any, int] | Exception) -> tuple[DemandAwareTime, FakeClock]:
    answers = polls(*demands)

    def poll() -> Any:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = FakeClock()
    return DemandAwareTime(poll, 0.1, clock=clock), clock


TASK = {(("CPU", 1.0),): 1}


def test_a_sleep_ends_at_the_first_poll_that_sees_new_demand():
    sleeper, clock = stand_in({}, {}, {}, TASK)
    sleeper.sleep(1)
    assert clock.now == pytest.approx(0.3)  # the third poll after the sleep began
    assert sleeper.early_wakes == 1


def test_demand_that_stays_or_goes_does_not_wake_the_loop():
    for demands in (
        (TASK,),  # a task waiting for a node already on its way
        (TASK, TASK, {}),  # a task placed
    ):
        sleeper, clock = stand_in(*demands)
        sleeper.sleep(1)
        assert clock.now == pytest.approx(1.0) and sleeper.early_wakes == 0


def test_after_an_early_wake_the_next_sleep_is_whole_so_the_loop_cannot_spin():
    more = {(("CPU", 1.0),): 5}
    sleeper, clock = stand_in({}, TASK, {}, more)
    sleeper.sleep(1)
    assert clock.now == pytest.approx(0.1)
    sleeper.sleep(1)  # demand grows all the time: this one still runs whole, in one piece
    assert clock.now == pytest.approx(1.1) and clock.slept[-1] == 1
    sleeper.sleep(1)  # and the next may end early again
    assert sleeper.early_wakes == 2 and clock.now < 2.1


def test_a_gcs_that_does_not_answer_leaves_the_loop_as_ray_has_it():
    sleeper, clock = stand_in(ConnectionError("GCS restarting"))
    sleeper.sleep(1)
    assert clock.now == pytest.approx(1.0) and sleeper.early_wakes == 0

    sleeper, clock = stand_in(ConnectionError("not yet"), {}, TASK)  # it answers later
    sleeper.sleep(1)
    assert clock.now == pytest.approx(0.2) and sleeper.early_wakes == 1


def test_every_other_use_of_time_is_the_real_modules():
    sleeper, clock = stand_in({})
    assert sleeper.time() == clock.time()
    sleeper.sleep(0.05)  # shorter than a poll: slept as asked, no poll
    assert clock.slept == [0.05]


# ------------------------------------------------------------------------------ installing


def test_rays_autoscaler_loop_has_the_shape_the_stand_in_relies_on():
    """Ray 2.60 runs v2's ``monitor.py`` as the head's autoscaler process; its loop ends each
    round with ``time.sleep`` of the module global ``time``. A Ray that changes this fails here."""
    import inspect

    import ray._private.services
    import ray.autoscaler.v2.monitor as v2

    assert 'AUTOSCALER_V2_DIR, "monitor.py"' in inspect.getsource(ray._private.services)
    assert v2.time is time
    assert "time.sleep(AUTOSCALER_UPDATE_INTERVAL_S)" in inspect.getsource(
        v2.AutoscalerMonitor._run
    )
    assert v2.__file__.endswith(demandwake.MONITOR_FILES)


@pytest.fixture
def monitor(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Ray's v2 ``monitor.py`` as the head's autoscaler runs it: the process's ``__main__``."""
    import ray.autoscaler.v2.monitor as v2

    module = types.ModuleType("__main__")
    module.__file__ = v2.__file__
    module.time = time  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "__main__", module)
    return module


def test_installed_only_in_the_autoscaler_and_only_once(monitor):
    installed = demandwake.install(lambda: {}, 100)
    assert isinstance(installed, DemandAwareTime) and monitor.time is installed
    assert demandwake.install(lambda: {}, 100) is installed
    assert installed._poll_s == pytest.approx(0.1)


def test_nothing_changes_when_switched_off_or_not_in_rays_autoscaler(monitor, monkeypatch, caplog):
    assert demandwake.install(lambda: {}, 0) is None and monitor.time is time

    monitor.time = types.SimpleNamespace(sleep=time.sleep)  # a loop of another shape
    assert demandwake.install(lambda: {}, 100) is None
    assert "new demand waits for its next loop" in caplog.text

    plain = types.ModuleType("__main__")
    plain.__file__ = "/usr/bin/ray"
    monkeypatch.setitem(sys.modules, "__main__", plain)  # `ray up`, `ray down`, a CLI
    assert demandwake.install(lambda: {}, 100) is None and not hasattr(plain, "time")


def test_the_poll_asks_the_gcs_the_head_published(monkeypatch):
    asked: list[str] = []

    class FakeGcsClient:
        def __init__(self, address: str) -> None:
            asked.append(address)

        def get_cluster_resource_state(self, timeout_s: float) -> bytes:
            assert timeout_s == demandwake.GCS_TIMEOUT_S  # a GCS that hangs cannot hold the loop
            reply = GetClusterResourceStateReply()
            reply.cluster_resource_state.CopyFrom(state(({"CPU": 1.0}, 1)))
            return reply.SerializeToString()

    import ray._raylet

    monkeypatch.setattr(ray._raylet, "GcsClient", FakeGcsClient)
    head: list[str | None] = [None]
    poll = demandwake.gcs_demand(lambda: head[0])
    with pytest.raises(LookupError):
        poll()  # the head has not published its address yet
    head[0] = "10.0.0.1:24001"
    assert poll() == TASK and poll() == TASK
    assert asked == ["10.0.0.1:24001"]  # one client, made once
