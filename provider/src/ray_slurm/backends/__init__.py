"""Where Ray nodes run: one interface (``base.Backend``), one module per backend, one factory.

* ``slurm``: each node is one SLURM batch job (``jobscript`` renders its script);
* ``login``: the head as a process on the login node (``head_mode: login``), same script;
* ``kube``: burst workers as Kubernetes pods (``podspec``), only with Kubernetes node types.

``nodestart`` describes how a Ray node starts, for the job script and the pod alike.
"""

from __future__ import annotations

from ray_slurm.backends.base import Backend
from ray_slurm.backends.kube import KubernetesBackend
from ray_slurm.backends.login import LoginBackend
from ray_slurm.backends.slurm import SlurmBackend
from ray_slurm.config import Settings
from ray_slurm.nodemap import NodeAddresses
from ray_slurm.slurm import Slurm
from ray_slurm.state import ClusterDir

__all__ = ["Backend", "make"]


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
