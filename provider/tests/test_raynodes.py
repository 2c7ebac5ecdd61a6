"""Which Ray nodes the head stops for lost jobs: alive workers whose instance id is the job."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ray_slurm.cluster import raynodes


@dataclass
class Info:
    instance_id: str
    is_head_node: bool = False


class NodeID(bytes):
    def hex(self) -> str:  # type: ignore[override]
        return bytes.hex(self)


class FakeGcs:
    drained: list[list[bytes]] = []
    fail = False

    def __init__(self, address: str) -> None:
        assert address == "10.0.0.1:6379"

    def get_all_node_info(self, timeout, state_filter):
        if self.fail:
            raise RuntimeError("GCS unavailable")
        return {NodeID(b"\x01" * 4): Info("41"), NodeID(b"\x02" * 4): Info("42"),
                NodeID(b"\x03" * 4): Info("login-head", is_head_node=True)}  # fmt: skip

    def drain_nodes(self, node_ids, timeout):
        FakeGcs.drained.append(node_ids)
        return node_ids


@pytest.fixture
def gcs(monkeypatch):
    import ray._raylet

    FakeGcs.drained, FakeGcs.fail = [], False
    monkeypatch.setattr(ray._raylet, "GcsClient", FakeGcs)
    return FakeGcs


def test_only_the_lost_jobs_workers_are_stopped(gcs, caplog):
    stopped = raynodes.stop_ray_nodes("10.0.0.1:6379", ["42", "login-head", "99"])
    assert stopped == ["02020202"]
    assert gcs.drained == [[b"\x02" * 4]]
    assert "stopped Ray node 02020202 of lost job 42" in caplog.text


def test_nothing_alive_for_the_jobs_asks_nothing(gcs):
    assert raynodes.stop_ray_nodes("10.0.0.1:6379", ["77"]) == []
    assert gcs.drained == []


def test_an_unreachable_gcs_is_a_warning(gcs, caplog):
    gcs.fail = True
    assert raynodes.stop_ray_nodes("10.0.0.1:6379", ["41"]) == []
    assert "could not stop the Ray nodes of lost jobs 41" in caplog.text


def test_joined_names_the_alive_workers_by_instance_id(gcs):
    """What the provider paces starts by (``startpace``): the head is not a worker."""
    assert raynodes.joined("10.0.0.1:6379") == {"41", "42"}
    gcs.fail = True
    assert raynodes.joined("10.0.0.1:6379") is None  # the caller falls back on SLURM's word
