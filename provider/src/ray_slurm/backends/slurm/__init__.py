"""The SLURM backend: each Ray node one batch job, and everything SLURM-specific: the one client of
SLURM's commands (client), the job script (jobscript, templates/), how a job ended (ended),
partitions, the RPC rate limiter, the node map and the job environment."""
