"""SLURM's queue as the harness reads it: a cluster's jobs, one job's state."""

from __future__ import annotations

import subprocess

from ray_slurm.backends.nodes import JobState
from ray_slurm.backends.slurm.client import Job, Slurm
from ray_slurm.backends.slurm.jobscript import parse_job_name
from support.procs import run


def cluster_jobs(jobs: list[Job], cluster_name: str, kind: str | None = None) -> list[Job]:
    """The cluster's jobs among ``jobs`` that still exist, found from their names alone."""
    found = []
    for job in jobs:
        owner = parse_job_name(job.name, cluster_name)
        if owner and job.state is not JobState.GONE and kind in (None, owner[0]):
            found.append(job)
    return found


def job_state(job_id: str) -> str:
    """squeue's state of one job ("" once squeue no longer shows it)."""
    out = run(["squeue", "--noheader", f"--jobs={job_id}", "--states=all", "--format=%T"],
              timeout=60, check=False).stdout  # fmt: skip
    return out.strip().splitlines()[0].strip() if out.strip() else ""


def cancel(jobs: list[Job]) -> None:
    if jobs:
        Slurm().scancel([j.job_id for j in jobs])


def raylet_pid(job_id: str) -> int | None:
    """The raylet of a job: the raylet binary itself, whose socket is below the job's own temp
    dir (``rs-<job>.XXXXXX``). Only the binary: Ray's agents and Python workers name the raylet's
    socket too, and once pids wrap around (pid_max 32768 here) one of them can have the lowest
    pid (the last CI killed a worker process that had already exited instead)."""
    pattern = rf"^\S*/raylet --raylet_socket_name=\S*/rs-{job_id}\."
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None
