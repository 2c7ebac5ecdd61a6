"""The one factory of backends: the provider and the CLI hold them as ``{name: Backend}``."""

from __future__ import annotations

from ray_slurm.backends.base import Backend
from ray_slurm.backends.kube.backend import KubernetesBackend
from ray_slurm.backends.login import LoginBackend
from ray_slurm.backends.slurm.backend import SlurmBackend
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.backends.slurm.nodemap import NodeAddresses
from ray_slurm.config import Settings
from ray_slurm.host.state import ClusterDir


def make(
    settings: Settings,
    cluster: ClusterDir,
    slurm: Slurm,
) -> dict[str, Backend]:
    """The backends a cluster of ``settings`` uses, by the name its node types give
    (``NodeTypeSpec.backend``). Their listings only look: what follows from what they saw is
    the core's (``core``), in the provider; ``ray-slurm status`` only shows it."""
    addresses = NodeAddresses(slurm, settings.node_map)
    backends: list[Backend] = [
        LoginBackend(settings, cluster, addresses),
        SlurmBackend(settings, slurm, cluster, addresses),
    ]
    if settings.kube_types:
        backends.append(KubernetesBackend(settings, cluster))
    return {backend.name: backend for backend in backends}
