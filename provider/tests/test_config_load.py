"""``config.load``: the one entry point from a raw config to a checked one (or its problems),
and ``ray-slurm validate``, which the Ansible site role runs on the config it renders."""

from __future__ import annotations

import copy
import json

import yaml

from ray_slurm import config
from ray_slurm.cli.main import main
from ray_slurm.config import Problem


def test_a_valid_config_is_bootstrapped_and_resolved(raw_config):
    before = copy.deepcopy(raw_config)
    loaded = config.load(raw_config)
    assert loaded.problems == []
    cfg, settings = loaded.required()
    assert cfg["provider"]["_head_node_type"] == "head"  # what the provider needs later
    assert settings.spec("cpu").cpus == 2 and settings.spec("cpu").complete
    assert raw_config == before  # the raw config is not changed


def test_every_problem_has_its_field_message_and_fix(raw_config):
    cpu = raw_config["available_node_types"]["cpu"]
    cpu["node_config"]["partiton"] = "x"
    cpu["min_workers"] = 3
    loaded = config.load(raw_config)
    assert loaded.config is None
    by_field = {p.field: p for p in loaded.problems}
    assert by_field["available_node_types.cpu.node_config"].message == "unknown key 'partiton'"
    assert by_field["available_node_types.cpu.node_config"].fix == (
        "remove the key or correct its spelling"
    )
    assert by_field["available_node_types.cpu.min_workers"].message == (
        "3 is more than max_workers (2)"
    )
    assert str(by_field["available_node_types.cpu.min_workers"]).startswith(
        "available_node_types.cpu.min_workers: 3"
    )


def test_a_config_with_problems_still_tells_what_it_can(raw_config):
    """``ray-slurm check`` checks the site for a config with problems: partitions of bad types."""
    raw_config["available_node_types"]["cpu"]["node_config"].update(partiton="x", cpus="two")
    raw_config["provider"]["slurm_timeout_s"] = "soon"
    loaded = config.load(raw_config)
    assert loaded.problems and loaded.settings is not None
    cpu = loaded.settings.spec("cpu")
    assert not cpu.complete and cpu.slurm == {"partition": "debug"} and cpu.cpus == 0
    assert loaded.settings.slurm_timeout_s == 20  # a bad value falls back to its default


def test_not_a_cluster_config_and_a_shape_no_rule_expects(tmp_path):
    assert config.load([1], "x.yaml").problems == [
        Problem("", "x.yaml: not a Ray cluster config (no provider section)",
                "start from examples/ray-slurm.yaml")
    ]  # fmt: skip
    path = tmp_path / "bad.yaml"
    path.write_text("provider: {}\navailable_node_types: [1, 2]\n")
    (problem,) = config.load_file(path).problems
    assert "cannot be read as a cluster config" in problem.message


def test_a_rule_text_becomes_a_problem():
    problem = Problem.from_rule("provider.temp_root: '/very/long' is too long: ...")
    assert problem.field == "provider.temp_root"
    assert problem.fix == "use a short node-local path such as /tmp"
    whole = Problem.from_rule("the head's job ends in 3 s: no time left")
    assert whole.field == "" and str(whole) == "the head's job ends in 3 s: no time left"


def test_validate_prints_problems_as_json_for_tools(raw_config, tmp_path, capsys):
    raw_config["cluster_name"] = "bad name"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    assert main(["validate", "--json", str(path)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["config"] == str(path)
    assert [p["field"] for p in out["problems"]] == ["cluster_name"]
    assert "'bad name' must match" in out["problems"][0]["message"]


def test_validate_text_and_exit_status(config_file, tmp_path, capsys):
    assert main(["validate", str(config_file)]) == 0
    assert capsys.readouterr().out.strip() == f"{config_file}: valid"
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_validate_off_site_leaves_the_sites_files_and_versions_to_it(raw_config, tmp_path,
                                                                     capsys):  # fmt: skip
    """On an Ansible controller the site's Ray and files are not there: ``--off-site``."""
    raw_config["available_node_types"]["burst"] = {
        "node_config": {"backend": "kubernetes", "image": "rayproject/ray:2.59.0-py311",
                        "cpus": 1, "memory": "2G"}, "max_workers": 1}  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    assert main(["validate", str(path)]) == 1
    assert "its tag says Ray 2.59.0" in capsys.readouterr().out
    assert main(["validate", "--off-site", str(path)]) == 0
    capsys.readouterr()
    del raw_config["available_node_types"]["burst"]
    raw_config["provider"]["node_map"] = str(tmp_path / "not-here-yet.yaml")
    path.write_text(yaml.safe_dump(raw_config))
    assert main(["validate", str(path)]) == 1
    assert "not-here-yet.yaml: cannot read" in capsys.readouterr().out
    assert main(["validate", "--off-site", str(path)]) == 0
    raw_config["provider"]["node_map"] = 7  # what the config says is still checked
    path.write_text(yaml.safe_dump(raw_config))
    assert main(["validate", "--off-site", str(path)]) == 1


def test_the_autoscaler_and_squeue_intervals_are_whole_seconds_of_at_least_one(raw_config):
    loaded = config.load(raw_config)
    assert (loaded.settings.autoscaler_interval_s, loaded.settings.squeue_interval_s) == (1, 5)
    raw_config["provider"].update(autoscaler_interval_s=0, squeue_interval_s=2.5)
    fields = {p.field: p.message for p in config.load(raw_config).problems}
    assert fields == {
        "provider.autoscaler_interval_s": "must be >= 1, got 0",
        "provider.squeue_interval_s": "expected a whole number, got 2.5",
    }
    raw_config["provider"].update(autoscaler_interval_s=2, squeue_interval_s=10)
    settings = config.load(raw_config).settings
    assert (settings.autoscaler_interval_s, settings.squeue_interval_s) == (2, 10)


def test_the_demand_poll_is_off_or_at_least_20_ms(raw_config):
    assert config.load(raw_config).settings.demand_poll_ms == 100
    for bad, message in ((5, "must be 0 (wait for the autoscaler's loop) or >= 20, got 5"),
                         (-1, "must be >= 0, got -1"),
                         ("fast", "expected a whole number, got 'fast'")):  # fmt: skip
        raw_config["provider"]["demand_poll_ms"] = bad
        fields = {p.field: p.message for p in config.load(raw_config).problems}
        assert fields == {"provider.demand_poll_ms": message}
    for good in (0, 20, 500):
        raw_config["provider"]["demand_poll_ms"] = good
        loaded = config.load(raw_config)
        assert loaded.problems == [] and loaded.settings.demand_poll_ms == good
