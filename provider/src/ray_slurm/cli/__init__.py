"""The command-line tools: ``ray-slurm`` (main), ``ray-slurm-node`` (node, run by every job script),
the head's life (headlife) and ``ray-slurm check`` (check/)."""
