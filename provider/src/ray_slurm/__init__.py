"""Ray autoscaler NodeProvider where every Ray node is one SLURM batch job.

Load it from a cluster config with::

    provider:
      type: external
      module: ray_slurm.SlurmNodeProvider
"""

from ray_slurm.provider import SlurmNodeProvider

__all__ = ["SlurmNodeProvider"]
__version__ = "0.1.0"
