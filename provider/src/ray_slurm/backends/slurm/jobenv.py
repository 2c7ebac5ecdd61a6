"""The environment SLURM's commands and the jobs they submit run with (``sbatch`` exports it).

Cleaned of whatever would make a command act for someone else or a job start as something else:
the ``SLURM_*`` variables of an enclosing job (e.g. the head's own job), a user's ``SBATCH_*``
defaults, and Ray's identity and client settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Variables of a running job or of the user's shell that change what SLURM commands do or print.
# sbatch/salloc/srun input variables (SBATCH_JOB_NAME, SBATCH_PARTITION, SBATCH_ACCOUNT, ...) take
# precedence over a script's #SBATCH lines: left in, they would rename the jobs (so the provider
# would not know them as its own) or send them elsewhere. SLURM_CONF is the user's choice of site.
_KEEP_SLURM_VARS = {"SLURM_CONF"}
_DROP_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCANCEL_",
                  "SCONTROL_", "SACCT_")  # fmt: skip
# Identity of the Ray node that runs the provider (the head), and Ray's client settings: a job
# must never inherit them, and a token in the user's environment must never replace the
# cluster's (Ray prefers RAY_AUTH_TOKEN to RAY_AUTH_TOKEN_PATH); job scripts and command runners
# set the auth variables themselves.
_DROP_RAY_VARS = {
    "RAY_CLOUD_INSTANCE_ID",
    "RAY_NODE_TYPE_NAME",
    "RAY_OVERRIDE_RESOURCES",
    "RAY_OVERRIDE_LABELS",
    "RAY_ADDRESS",
    "RAY_enable_autoscaler_v2",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_AUTH_MODE",
    "RAY_NAMESPACE",
    "RAY_JOB_CONFIG_JSON_ENV_VAR",
}


def clean_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for SLURM commands and for the jobs they submit (sbatch exports it)."""
    env = dict(os.environ if base is None else base)
    for key in list(env):
        job_var = key.startswith(_DROP_PREFIXES) and key not in _KEEP_SLURM_VARS
        if job_var or key in _DROP_RAY_VARS:
            del env[key]
    return env
