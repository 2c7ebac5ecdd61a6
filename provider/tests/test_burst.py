"""The burst policy: which node types must not grow now, and the autoscaling config that says so."""

from __future__ import annotations

import pytest
import yaml

from ray_slurm import config
from ray_slurm.cluster import burst
from ray_slurm.config.kubetypes import head_versions

RAY, PY = head_versions().split(" ")
IMAGE = f"rayproject/ray:{RAY}"


def with_types(cfg):
    types = cfg["available_node_types"]
    types["cpu"]["max_workers"] = 2
    types["big"] = {"node_config": {"cpus": 4, "memory": "4G"}, "max_workers": 1}
    types["burst"] = {"node_config": {"backend": "kubernetes", "image": IMAGE, "cpus": 2,
                                      "memory": "2G"}, "max_workers": 3}  # fmt: skip


@pytest.fixture
def settings(make_settings):
    return make_settings(with_types)


MAX = {"head": 0, "cpu": 2, "big": 1, "burst": 3}


def test_slurm_first_pods_held_while_slurm_can_grow(settings):
    assert not burst.bursting(settings, MAX, {}, set())
    assert burst.limits(settings, MAX, {}, set()) == {"burst": 0}
    # pods that exist are kept (held at their number, not below): they go when idle
    assert burst.limits(settings, MAX, {"burst": 2, "cpu": 1}, set()) == {"burst": 2}


def test_pods_allowed_while_a_slurm_type_is_backed_off(settings):
    counts = {"cpu": 1}
    assert burst.bursting(settings, MAX, counts, {"cpu"})
    # the backed-off type is held at what it has; the pod type may grow
    assert burst.limits(settings, MAX, counts, {"cpu"}) == {"cpu": 1}


def test_pods_allowed_while_a_slurm_type_is_at_its_max(settings):
    counts = {"cpu": 2}
    assert burst.bursting(settings, MAX, counts, set())
    assert burst.limits(settings, MAX, counts, set()) == {}


def test_a_backed_off_pod_type_is_held_too(settings):
    assert burst.limits(settings, MAX, {"burst": 1}, {"cpu", "burst"}) == {"cpu": 0, "burst": 1}


def test_no_slurm_worker_types_means_pods_are_the_workers(make_settings):
    def change(cfg):
        with_types(cfg)
        del cfg["available_node_types"]["cpu"], cfg["available_node_types"]["big"]

    settings = make_settings(change)
    assert burst.limits(settings, {"burst": 3}, {}, set()) == {}


def test_a_limit_is_never_below_the_count_nor_a_type_at_its_max(settings):
    held = burst.limits(settings, MAX, {"cpu": 2, "big": 1, "burst": 3}, {"cpu", "big"})
    assert held == {}  # every type is at its max already: nothing to hold


def test_effective_config(bootstrapped):
    bootstrapped["available_node_types"]["cpu"]["min_workers"] = 1
    eff = burst.effective_config(bootstrapped, {"cpu": 0})
    assert eff["available_node_types"]["cpu"]["max_workers"] == 0
    assert eff["available_node_types"]["cpu"]["min_workers"] == 0  # min never above max
    assert bootstrapped["available_node_types"]["cpu"]["max_workers"] == 2  # not changed
    assert burst.effective_config(bootstrapped, {}) == bootstrapped


def test_autoscaling_config_file(bootstrapped, tmp_path):
    src, dst = tmp_path / "ray_bootstrap_config.yaml", tmp_path / "autoscaling.yaml"
    src.write_text(yaml.safe_dump(bootstrapped))
    keeper = burst.AutoscalingConfig(src, dst)
    assert keeper.update({"cpu": 1})
    assert yaml.safe_load(dst.read_text())["available_node_types"]["cpu"]["max_workers"] == 1
    assert dst.stat().st_mode & 0o777 == 0o600
    assert not keeper.update({"cpu": 1})  # unchanged: not rewritten
    assert keeper.update({})
    assert yaml.safe_load(dst.read_text()) == bootstrapped
    # `ray up` uploads a changed config: it is taken over at once
    bootstrapped["max_workers"] = 7
    src.write_text(yaml.safe_dump(bootstrapped) + "# changed\n")
    assert keeper.update({})
    assert yaml.safe_load(dst.read_text())["max_workers"] == 7


def test_load_settings_of_the_effective_config_still_work(bootstrapped, tmp_path):
    """Ray hands the autoscaler's provider the effective config's provider section."""
    eff = burst.effective_config(bootstrapped, {"cpu": 0})
    settings = config.load_settings(eff["provider"], eff["cluster_name"])
    assert settings.spec("cpu").backend == "slurm"
