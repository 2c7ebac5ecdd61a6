"""Ray autoscaler NodeProvider where every Ray node is one SLURM batch job.

Load it from a cluster config with::

    provider:
      type: external
      module: ray_slurm.SlurmNodeProvider
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray_slurm.autoscaler.provider import SlurmNodeProvider

__all__ = ["SlurmNodeProvider"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use: the provider needs Ray (~1 s to import), the `ray-slurm` helpers
    # that every job script runs before `ray start` do not.
    if name == "SlurmNodeProvider":
        from ray_slurm.autoscaler.provider import SlurmNodeProvider

        return SlurmNodeProvider
    raise AttributeError(f"module 'ray_slurm' has no attribute {name!r}")
