"""What Ray's commands get from the provider for a config: a clean refusal or the running
cluster's own settings (`ray up` with a bad config, `ray get-head-ip` on a raw yaml)."""

from __future__ import annotations

import copy

import click
import pytest
import yaml

from ray_slurm import SlurmNodeProvider, config
from ray_slurm.autoscaler.launcher import ConfigRefused
from ray_slurm.host.state import ClusterDir


def test_a_bad_config_is_a_click_error_listing_every_problem(raw_config):
    """Ray's CLI is click: a ClickException is printed as its message, exit 1, no traceback."""
    raw_config["available_node_types"]["cpu"]["node_config"]["partition"] = "debug$(id)"
    raw_config["available_node_types"]["cpu"]["max_workers"] = -1
    with pytest.raises(ConfigRefused) as exc:
        SlurmNodeProvider.bootstrap_config(raw_config)
    assert isinstance(exc.value, click.ClickException) and exc.value.exit_code == 1
    message = exc.value.format_message()
    assert "node_config.partition: invalid value 'debug$(id)'" in message
    assert "available_node_types.cpu.max_workers" in message


def test_a_raw_provider_section_uses_the_running_clusters_upload(raw_config):
    """`ray get-head-ip` makes a provider from the yaml as written: no bootstrap info in it."""
    raw = copy.deepcopy(raw_config)
    with pytest.raises(ConfigRefused, match=r"cluster example is not up \(.*is missing\)"):
        SlurmNodeProvider(raw["provider"], raw["cluster_name"])

    bootstrapped = config.bootstrap(copy.deepcopy(raw_config))  # what `ray up` uploads
    cluster = ClusterDir(raw["provider"]["state_dir"], raw["cluster_name"]).create()
    cluster.bootstrap_config.write_text(yaml.safe_dump(bootstrapped))
    provider = SlurmNodeProvider(raw["provider"], raw["cluster_name"])
    assert set(provider.settings.node_types) == {"head", "cpu"}
    assert provider.settings.head_node_type == "head"


def test_a_state_dir_without_flock_is_a_click_error(bootstrapped, monkeypatch):
    """No filesystem here refuses flock: ``fcntl.flock`` is replaced (docs/faults.md)."""
    import errno

    from ray_slurm.host import state

    def refuse(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(state.fcntl, "flock", refuse)
    with pytest.raises(ConfigRefused, match=r"cannot lock .*state\.lock: Function not implemented"):
        SlurmNodeProvider(bootstrapped["provider"], bootstrapped["cluster_name"])
