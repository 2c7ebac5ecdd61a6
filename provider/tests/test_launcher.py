"""The `ray` options the provider reads from click, and whom --keep-min-workers keeps."""

from __future__ import annotations

import click
import pytest

from ray_slurm.autoscaler.launcher import (
    beyond_min_workers,
    keep_min_workers_requested,
    restart_requested,
    workers_only_requested,
)


def _seen_inside(name: str, option: str, args: list[str]) -> tuple[bool, bool, bool]:
    seen: list[tuple[bool, bool, bool]] = []

    @click.command(name=name)
    @click.option(f"--{option}", is_flag=True)
    def command(**_: bool) -> None:
        seen.append((restart_requested(), keep_min_workers_requested(), workers_only_requested()))

    @click.group()
    def ray() -> None:  # as Ray's CLI: `ray <command> [options]`
        pass

    ray.add_command(command)
    ray.main([name, *args], standalone_mode=False)
    return seen[0]


@pytest.mark.parametrize(
    ("name", "option", "args", "expected"),
    [
        ("up", "restart-only", ["--restart-only"], (True, False, False)),
        ("up", "restart-only", [], (False, False, False)),
        ("down", "keep-min-workers", ["--keep-min-workers"], (False, True, False)),
        ("down", "keep-min-workers", [], (False, False, False)),
        ("down", "workers-only", ["--workers-only"], (False, False, True)),
        # the same option name on another command means nothing to the provider
        ("exec", "restart-only", ["--restart-only"], (False, False, False)),
        ("up", "workers-only", ["--workers-only"], (False, False, False)),
    ],
)
def test_options_read_from_the_ray_command(name, option, args, expected):
    assert _seen_inside(name, option, args) == expected


def test_outside_a_ray_command_nothing_is_requested():
    requested = (restart_requested(), keep_min_workers_requested(), workers_only_requested())
    assert requested == (False, False, False)


def test_each_types_min_workers_are_kept_the_same_ones_every_time():
    workers = [("12", "cpu"), ("9", "cpu"), ("10", "cpu"), ("11", "gpu"), ("pod-a", "burst")]
    minimum = {"cpu": 2, "gpu": 0}
    stop = beyond_min_workers(workers, minimum)
    assert stop == ["11", "12", "pod-a"]  # jobs 9 and 10 (numeric order) stay
    # Ray's teardown asks again after the first ones are cancelled: the same ones stay
    assert beyond_min_workers([w for w in workers if w[0] not in stop], minimum) == []


def test_min_workers_beyond_what_runs_keeps_everything():
    assert beyond_min_workers([("3", "cpu")], {"cpu": 5}) == []


def test_only_rays_legacy_field_noise_is_quieted():
    import logging

    from ray_slurm.autoscaler import launcher

    launcher.quiet_ray_legacy_field_warnings()
    launcher.quiet_ray_legacy_field_warnings()
    util = logging.getLogger("ray.autoscaler._private.util")
    assert util.filters.count(launcher._LEGACY_FILTER) == 1  # installed once, on Ray's logger

    def record(message: str) -> logging.LogRecord:
        return util.makeRecord(util.name, logging.WARNING, "util.py", 279, message, (), None)

    noise = "Dropping the empty legacy field head_node. head_nodeis not supported for ray>=2.0.0."
    assert not util.filter(record(noise))
    assert util.filter(record("The `head_node` field is deprecated and will be ignored."))
