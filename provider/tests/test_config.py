"""Config validation: the example bootstraps, resources follow the SLURM request, and every bad
input gives a ConfigError that names the field and the value (all problems at once)."""

from __future__ import annotations

import copy

import pytest
from conftest import MiB

from ray_slurm import config
from ray_slurm.config.nodetypes import (
    DEFAULT_OBJECT_STORE_FRACTION,
    MIN_OBJECT_STORE_BYTES,
    ConfigError,
    parse_size,
)

EXAMPLE_MEM = 1500 * MiB  # examples/ray-slurm.yaml: cpu.node_config.memory: 1500M


def cpu(cfg):
    return cfg["available_node_types"]["cpu"]


def head(cfg):
    return cfg["available_node_types"]["head"]


# ------------------------------------------------------------------------------------ example


def test_example_bootstraps(bootstrapped, settings, state_dir):
    assert bootstrapped["provider"]["_head_node_type"] == "head"
    assert set(bootstrapped["provider"]["_node_types"]) == {"head", "cpu"}
    assert bootstrapped["provider"]["_min_workers"] == {"head": 0, "cpu": 0}  # --keep-min-workers
    assert settings.cluster_name == "example"
    assert settings.head_mode == "login"
    assert settings.head_node_type == "head"
    assert settings.state_dir == str(state_dir)
    assert settings.temp_root == "/tmp"

    worker = settings.spec("cpu")
    assert (worker.kind, worker.backend) == ("worker", "slurm")
    assert worker.cpus == 2
    assert worker.memory_mb == 1500
    assert worker.slurm == {"partition": "debug", "time": "01:00:00"}
    assert worker.object_store_bytes == int(EXAMPLE_MEM * DEFAULT_OBJECT_STORE_FRACTION)

    login_head = settings.spec("head")
    assert (login_head.kind, login_head.backend) == ("head", "login")
    assert login_head.resources == {"CPU": 0}


def test_resources_follow_node_config(settings):
    resources = settings.spec("cpu").resources
    assert resources["CPU"] == 2
    assert resources["memory"] == int(EXAMPLE_MEM * 0.7)
    assert "GPU" not in resources


def test_fillout_resources_fills_the_raw_config(raw_config):
    filled = config.fillout_resources(copy.deepcopy(raw_config))
    assert cpu(filled)["resources"] == {"CPU": 2, "memory": int(EXAMPLE_MEM * 0.7)}
    assert head(filled)["resources"] == {"CPU": 0}


def test_fillout_leaves_invalid_types_for_bootstrap(raw_config):
    cpu(raw_config)["resources"] = {"CPU": 8}  # disagrees with cpus: 2
    filled = config.fillout_resources(copy.deepcopy(raw_config))
    assert cpu(filled)["resources"] == {"CPU": 8}


def test_gpus_and_custom_resources(make_settings):
    def change(cfg):
        cpu(cfg)["node_config"]["gpus"] = 2
        cpu(cfg)["resources"] = {"GPU": 2, "CPU": 2, "accel": 1}

    spec = make_settings(change).spec("cpu")
    assert spec.gpus == 2
    assert spec.resources["GPU"] == 2
    assert spec.custom_resources == {"accel": 1}


def test_cpus_may_come_from_resources(make_settings):
    def change(cfg):
        del cpu(cfg)["node_config"]["cpus"]
        cpu(cfg)["resources"] = {"CPU": 3}

    assert make_settings(change).spec("cpu").cpus == 3


def test_explicit_object_store_and_memory(make_settings):
    def change(cfg):
        cpu(cfg)["node_config"]["object_store_memory"] = "500M"
        cpu(cfg)["resources"] = {"memory": 800 * MiB}

    spec = make_settings(change).spec("cpu")
    assert spec.object_store_bytes == 500 * MiB
    assert spec.resources["memory"] == 800 * MiB


def test_slurm_head_mode(make_settings):
    def change(cfg):
        cfg["provider"]["head_mode"] = "slurm"
        head(cfg)["node_config"] = {"cpus": 1, "memory": "2G", "partition": "debug"}
        head(cfg)["resources"] = {}

    settings = make_settings(change)
    spec = settings.spec("head")
    assert (spec.kind, spec.backend) == ("head", "slurm")
    assert spec.resources["CPU"] == 1
    assert spec.slurm == {"partition": "debug"}


def test_unknown_node_type_lookup(settings):
    with pytest.raises(ConfigError, match="unknown node type 'gpu'"):
        settings.spec("gpu")


def test_unbootstrapped_provider_section_is_refused(raw_config):
    with pytest.raises(ConfigError, match="not bootstrapped"):
        config.load_settings(raw_config["provider"], raw_config["cluster_name"])


# ------------------------------------------------------------------------------- bad configs


def _set(path, value):
    """A change that sets cfg[path[0]][path[1]]... = value."""

    def change(cfg):
        target = cfg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete_memory(cfg):
    del cpu(cfg)["node_config"]["memory"]


def _rename_cpu(cfg):
    types = cfg["available_node_types"]
    types["cpu;rm -rf"] = types.pop("cpu")


NC = ("available_node_types", "cpu", "node_config")

BAD_CONFIGS = {
    "CPU disagrees with cpus": (
        _set(("available_node_types", "cpu", "resources"), {"CPU": 4}),
        ["available_node_types.cpu", "resources.CPU=4", "node_config.cpus=2"],
    ),
    "GPU disagrees with gpus": (
        lambda cfg: (
            _set((*NC, "gpus"), 1)(cfg),
            _set(("available_node_types", "cpu", "resources"), {"GPU": 2})(cfg),
        ),
        ["available_node_types.cpu", "resources.GPU=2", "node_config.gpus=1"],
    ),
    "negative max_workers": (
        _set(("available_node_types", "cpu", "max_workers"), -1),
        ["available_node_types.cpu.max_workers", "-1"],
    ),
    "fractional min_workers": (
        _set(("available_node_types", "cpu", "min_workers"), 1.5),
        ["available_node_types.cpu.min_workers", "1.5"],
    ),
    "missing memory": (
        _delete_memory,
        ["available_node_types.cpu.node_config.memory", "required"],
    ),
    "memory too small for the object store": (
        _set((*NC, "memory"), "200M"),
        ["available_node_types.cpu", f"{int(200 * MiB * 0.3)} bytes", str(MIN_OBJECT_STORE_BYTES)],
    ),
    "resources.memory plus object store exceed memory": (
        _set(("available_node_types", "cpu", "resources"), {"memory": 1200 * MiB}),
        [
            "available_node_types.cpu",
            f"resources.memory={1200 * MiB}",
            f"({int(EXAMPLE_MEM * 0.3)})",
            "node_config.memory (1500M)",
        ],
    ),
    "bad memory size": (
        _set((*NC, "memory"), "lots"),
        ["available_node_types.cpu.node_config.memory", "'lots'"],
    ),
    "zero cpus": (
        _set((*NC, "cpus"), 0),
        ["available_node_types.cpu.node_config.cpus", "0"],
    ),
    "unknown node_config key": (
        _set((*NC, "cpu"), 4),
        ["available_node_types.cpu.node_config", "unknown key 'cpu'"],
    ),
    "unknown provider key": (
        _set(("provider", "partition"), "debug"),
        ["provider", "unknown key 'partition'"],
    ),
    "node type name with shell metacharacters": (
        _rename_cpu,
        ["available_node_types.cpu;rm -rf", "'cpu;rm -rf'"],
    ),
    "cluster name with a space": (
        _set(("cluster_name",), "my cluster"),
        ["cluster_name", "'my cluster'"],
    ),
    "partition with a space": (
        _set((*NC, "partition"), "debug long"),
        ["available_node_types.cpu.node_config.partition", "'debug long'"],
    ),
    "partition with command substitution": (
        _set((*NC, "partition"), "$(x)"),
        ["available_node_types.cpu.node_config.partition", "'$(x)'"],
    ),
    "account with a newline": (
        _set((*NC, "account"), "proj\n#SBATCH --mem=1T"),
        ["available_node_types.cpu.node_config.account", "'proj\\n#SBATCH --mem=1T'"],
    ),
    "reserved sbatch option": (
        _set((*NC, "sbatch_options"), ["--partition=x"]),
        ["available_node_types.cpu.node_config.sbatch_options", "'--partition=x'", "ray-slurm"],
    ),
    "abbreviated reserved sbatch option": (
        _set((*NC, "sbatch_options"), ["--part=x"]),
        ["available_node_types.cpu.node_config.sbatch_options", "'--part=x'"],
    ),
    "reserved sbatch flag": (
        _set((*NC, "sbatch_options"), ["--exclusive"]),
        ["available_node_types.cpu.node_config.sbatch_options", "'--exclusive'"],
    ),
    "sbatch option with spaces": (
        _set((*NC, "sbatch_options"), ["--comment=two words"]),
        ["available_node_types.cpu.node_config.sbatch_options", "'--comment=two words'"],
    ),
    "sbatch option with command substitution": (
        _set((*NC, "sbatch_options"), ["--comment=$(id)"]),
        ["available_node_types.cpu.node_config.sbatch_options", "'--comment=$(id)'"],
    ),
    "sbatch_options not a list": (
        _set((*NC, "sbatch_options"), "--reservation=ray"),
        ["available_node_types.cpu.node_config.sbatch_options", "'--reservation=ray'"],
    ),
    "setup not a list": (
        _set((*NC, "setup"), "module load python"),
        ["available_node_types.cpu.node_config.setup", "'module load python'"],
    ),
    "head_mode not login or slurm": (
        _set(("provider", "head_mode"), "remote"),
        ["provider.head_mode", "'remote'"],
    ),
    "disable_node_updaters false": (
        _set(("provider", "disable_node_updaters"), False),
        ["provider.disable_node_updaters", "must be true"],
    ),
    "disable_node_updaters a string": (
        _set(("provider", "disable_node_updaters"), "yes"),
        ["provider.disable_node_updaters", "must be true"],
    ),
    "SLURM key on the login-mode head": (
        _set(("available_node_types", "head", "node_config"), {"partition": "debug"}),
        [
            "available_node_types.head.node_config",
            "unknown key 'partition'",
            "head_mode is 'login'",
        ],
    ),
    "temp_root too long": (
        _set(("provider", "temp_root"), "/scratch/very/long/node/local/tmp"),
        ["provider.temp_root", "'/scratch/very/long/node/local/tmp'"],
    ),
    "metrics_export not a boolean": (
        _set(("provider", "metrics_export"), "yes"),
        ["provider.metrics_export", "expected true or false, got 'yes'"],
    ),
    "head_ip not an address": (
        _set(("provider", "head_ip"), "login1; rm"),
        ["provider.head_ip", "'login1; rm'"],
    ),
    "invalid resource name": (
        _set(("available_node_types", "cpu", "resources"), {"bad name": 1}),
        ["available_node_types.cpu.resources", "'bad name'"],
    ),
    "negative custom resource": (
        _set(("available_node_types", "cpu", "resources"), {"accel": -1}),
        ["available_node_types.cpu.resources.accel", "-1"],
    ),
    "gpus given twice": (
        lambda cfg: (_set((*NC, "gpus"), 1)(cfg), _set((*NC, "gres"), "gpu:1")(cfg)),
        ["available_node_types.cpu.node_config", "gpus or in gres"],
    ),
    "missing head_node_type": (
        _set(("head_node_type",), None),
        ["head_node_type", "required"],
    ),
}


@pytest.mark.parametrize(("change", "expected"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_names_field_and_value(raw_config, change, expected):
    change(raw_config)
    with pytest.raises(ConfigError) as excinfo:
        config.bootstrap(raw_config)
    message = str(excinfo.value)
    assert message.startswith("invalid ray-slurm config:")
    problem = next((p for p in excinfo.value.problems if expected[0] in p), None)
    assert problem is not None, message
    for part in expected:
        assert part in problem, f"{part!r} not in {problem!r}"


def test_disable_node_updaters_missing(raw_config):
    del raw_config["provider"]["disable_node_updaters"]
    with pytest.raises(ConfigError, match="provider.disable_node_updaters"):
        config.bootstrap(raw_config)


def test_slurm_head_needs_memory_and_cpus(raw_config):
    raw_config["provider"]["head_mode"] = "slurm"
    with pytest.raises(ConfigError) as excinfo:
        config.bootstrap(raw_config)
    message = str(excinfo.value)
    assert "available_node_types.head: set node_config.cpus" in message
    assert "available_node_types.head.node_config.memory: required" in message


def test_all_problems_are_reported_at_once(raw_config):
    raw_config["cluster_name"] = "my cluster"
    raw_config["provider"]["bogus"] = 1
    cpu(raw_config)["node_config"]["partition"] = "a b"
    cpu(raw_config)["resources"] = {"CPU": 4}
    with pytest.raises(ConfigError) as excinfo:
        config.bootstrap(raw_config)
    problems = excinfo.value.problems
    for part in ("'my cluster'", "unknown key 'bogus'", "'a b'", "resources.CPU=4"):
        assert sum(part in p for p in problems) == 1, (part, problems)


def test_cpu_disagreement_is_one_problem(raw_config):
    cpu(raw_config)["resources"] = {"CPU": 4}
    with pytest.raises(ConfigError) as excinfo:
        config.bootstrap(raw_config)
    assert len(excinfo.value.problems) == 1, excinfo.value.problems


def test_all_problems_reported_with_bad_worker_counts(raw_config):
    cpu(raw_config)["max_workers"] = -1
    cpu(raw_config)["node_config"]["partition"] = "a b"
    with pytest.raises(ConfigError) as excinfo:
        config.bootstrap(raw_config)
    message = str(excinfo.value)
    assert "available_node_types.cpu.max_workers" in message
    assert "'a b'" in message


def test_object_store_larger_than_memory_is_refused(raw_config):
    cpu(raw_config)["node_config"]["object_store_memory"] = "2G"
    with pytest.raises(ConfigError, match="available_node_types.cpu"):
        config.bootstrap(raw_config)


# ---------------------------------------------------------------------------------- parse_size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("4G", 4 * 1024**3),
        ("4g", 4 * 1024**3),
        ("4GB", 4 * 1024**3),
        ("4000M", 4000 * MiB),
        ("4000", 4000 * MiB),
        (4000, 4000 * MiB),
        ("512K", 512 * 1024),
        ("1.5G", int(1.5 * 1024**3)),
        ("1T", 1024**4),
    ],
)
def test_parse_size(value, size):
    assert parse_size(value, "x.memory") == size


@pytest.mark.parametrize("value", ["0", 0, -1, "abc", "4X", "", None, True, "-4G"])
def test_parse_size_rejects(value):
    with pytest.raises(ValueError, match="x.memory") as excinfo:
        parse_size(value, "x.memory")
    assert repr(value) in str(excinfo.value)
