"""Back-off per node type, and time limits capped to the head's job."""

from __future__ import annotations

import pytest

from ray_slurm.backends.slurm.formats import parse_duration
from ray_slurm.cluster.policy import (
    BACKOFF_MAX_S,
    BACKOFF_START_S,
    HEAD_TIME_MARGIN_S,
    LaunchRefused,
    TypeBackoff,
    start_room,
    worker_time_limit_minutes,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_refuses_until_the_delay_passed_and_names_the_reason():
    clock = Clock()
    backoff = TypeBackoff(clock)
    backoff.check("cpu")  # nothing recorded: allowed
    assert backoff.fail("cpu", "sbatch failed: invalid partition") == BACKOFF_START_S
    with pytest.raises(LaunchRefused, match="node type cpu is backed off .*invalid partition"):
        backoff.check("cpu")
    backoff.check("gpu")  # other types are not affected
    clock.now += BACKOFF_START_S + 1
    backoff.check("cpu")


def test_backoff_doubles_per_round_up_to_a_maximum_and_resets_on_success():
    clock = Clock()
    backoff = TypeBackoff(clock)
    delays = []
    for _ in range(8):  # each round: the back-off ran out, the next try failed again
        delays.append(backoff.fail("cpu", "x"))
        clock.now += delays[-1]
    assert delays[:3] == [BACKOFF_START_S, 2 * BACKOFF_START_S, 4 * BACKOFF_START_S]
    assert delays[-1] == BACKOFF_MAX_S
    clock.now -= 1
    assert backoff.backed_off() == {"cpu": "x"}
    backoff.succeed("cpu")
    backoff.check("cpu")
    assert backoff.fail("cpu", "y") == BACKOFF_START_S


def test_failures_of_one_round_count_once():
    """Five jobs of one launch that all die of the same setup line: one doubling, not five."""
    clock = Clock()
    backoff = TypeBackoff(clock)
    assert backoff.fail("cpu", "job 1 ended FAILED") == BACKOFF_START_S
    clock.now += 5
    assert [backoff.fail("cpu", f"job {i} ended FAILED") for i in (2, 3)] == [25, 25]
    assert backoff.backed_off() == {"cpu": "job 3 ended FAILED"}  # the latest reason
    clock.now += 26
    assert backoff.fail("cpu", "job 6 ended FAILED") == 2 * BACKOFF_START_S


def test_a_failing_type_gets_one_node_at_a_time_until_one_starts():
    clock = Clock()
    backoff = TypeBackoff(clock)
    assert backoff.allowed("cpu", 5, unproven=["7", "8"]) == 5  # a healthy type: all of them
    backoff.fail("cpu", "job 7 ended FAILED (exit code 3:0)")
    with pytest.raises(LaunchRefused, match="backed off"):
        backoff.allowed("cpu", 5, unproven=[])
    clock.now += BACKOFF_START_S
    assert backoff.failing("cpu")
    assert backoff.allowed("cpu", 5, unproven=[]) == 1  # the probe
    with pytest.raises(LaunchRefused, match="one node at a time .* waiting for 9"):
        backoff.allowed("cpu", 1, unproven=["9"])
    backoff.succeed("cpu")  # job 9 has run for START_WINDOW_S
    assert not backoff.failing("cpu")
    assert backoff.allowed("cpu", 5, unproven=["9"]) == 5


@pytest.mark.parametrize(
    ("type_time", "head_left", "expected"),
    [
        (3600, None, None),  # a head without a limit caps nothing
        (None, None, None),
        (600, 3600, None),  # the type's own limit ends first
        (7200, 3600, (3600 - HEAD_TIME_MARGIN_S) // 60),
        (None, 600, (600 - HEAD_TIME_MARGIN_S) // 60),  # no type limit: the head's
        (3600, 150, 1),
    ],
)
def test_worker_time_limit_never_outlives_the_head(type_time, head_left, expected):
    assert worker_time_limit_minutes(type_time, head_left) == expected


def test_no_new_worker_when_the_head_is_about_to_end():
    with pytest.raises(LaunchRefused, match="head's job ends in 90 s"):
        worker_time_limit_minutes(3600, 90)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300), ("05:30", 330), ("1:00:00", 3600), ("2-03", 183600),
        ("2-03:04", 183840), ("2-03:04:05", 183845), ("UNLIMITED", None), ("INVALID", None),
        ("NOT_SET", None), ("", None),
    ],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["x", "1:2:3:4", "a-1", "-5"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a SLURM duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("starting", "joined", "speed", "room"),
    [(0, 0, 1.0, 5), (5, 0, 1.0, 0), (3, 16, 1.0, 13), (5, 20, 0.25, 0), (4, 40, 0.25, 6),
     (0, 3, 2.0, 6), (9, 0, 1.0, 0)],
)  # fmt: skip
def test_nodes_starting_at_once_are_upscaling_speed_times_those_joined_at_least_five(
    starting, joined, speed, room
):
    assert start_room(starting, joined, speed) == room
