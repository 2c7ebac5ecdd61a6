"""The error every node backend raises when it cannot do what the provider asked.

The provider catches this one class: a refused ``sbatch``, an unreachable ``slurmctld`` and a
Kubernetes API error are all "the backend could not", with the backend's own words as message.
"""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend (SLURM, Kubernetes) refused or failed a call; the message says why."""


class BackendBusy(BackendError):
    """The backend's control plane made the call wait until it gave up (slurmctld's RPC rate
    limiter): the call may be tried again later, and it says nothing about the node type."""
