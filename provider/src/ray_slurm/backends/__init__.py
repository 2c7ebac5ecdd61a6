"""Where Ray nodes run: one interface (``base.Backend``), one module per backend, one factory.

* ``slurm``: each node is one SLURM batch job (``jobscript`` renders its script);
* ``login``: the head as a process on the login node (``head_mode: login``), same script;
* ``kube``: burst workers as Kubernetes pods (``podspec``), only with Kubernetes node types.

``nodestart`` describes how a Ray node starts, for the job script and the pod alike.
"""

from __future__ import annotations

from collections.abc import Callable

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
    *,
    on_failure: Callable[[str, str], object] | None = None,
    on_lost: Callable[[list[str]], None] | None = None,
) -> dict[str, Backend]:
    """The backends a cluster of ``settings`` uses, by the name its node types give
    (``NodeTypeSpec.backend``). Without ``on_failure``/``on_lost`` they only look: ended jobs
    and pods are left to the head's autoscaler, which reports them (``ray-slurm status``)."""
    addresses = NodeAddresses(slurm, settings.node_map)
    backends: list[Backend] = [
        LoginBackend(settings, cluster, addresses),
        SlurmBackend(settings, slurm, cluster, on_failure, on_lost, addresses),
    ]
    if settings.kube_types:
        backends.append(KubernetesBackend(settings, cluster, on_failure))
    return {backend.name: backend for backend in backends}
