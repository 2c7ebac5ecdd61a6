"""The error every node backend raises when it cannot do what the provider asked.

The provider catches this one class: a refused ``sbatch``, an unreachable ``slurmctld`` and a
Kubernetes API error are all "the backend could not", with the backend's own words as message.
"""

from __future__ import annotations


class BackendError(RuntimeError):
    """A backend (SLURM, Kubernetes) refused or failed a call; the message says why."""
