"""The cluster config: one model, validated by one piece of code.

``load`` turns a raw cluster config (as read from ``ray-slurm.yaml``) into the config Ray runs
with (bootstrapped) and the typed, resolved ``Settings``, or into the list of every problem,
each naming its field and value, with a fix. ``ray up`` (through the provider's
``bootstrap_config``), every ``ray-slurm`` command and the Ansible ``site`` role (``ray-slurm
validate``) use it. The rules live in ``provider`` (the provider section), ``nodetypes`` (a node
type's SLURM request and Ray resources) and ``kubetypes`` (Kubernetes types and connection).
"""

from __future__ import annotations

from ray_slurm.config.load import Loaded, Problem, load, load_file, not_a_cluster_config
from ray_slurm.config.nodetypes import ConfigError, NodeTypeSpec, parse_size
from ray_slurm.config.provider import (
    Settings,
    bootstrap,
    bootstrapped_provider,
    cluster_dir,
    fillout_resources,
    load_settings,
)

__all__ = [
    "ConfigError",
    "Loaded",
    "NodeTypeSpec",
    "Problem",
    "Settings",
    "bootstrap",
    "bootstrapped_provider",
    "cluster_dir",
    "fillout_resources",
    "load",
    "load_file",
    "load_settings",
    "not_a_cluster_config",
    "parse_size",
]
