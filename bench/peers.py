"""g. What users would pick instead, on the same site with the same resources, each used as its
own documentation shows:

1. Ray's own SLURM recipe, ``ray symmetric-run`` (Ray 2.60): one sbatch of 3 nodes x 2 CPUs,
   ``srun ray symmetric-run --address <first node>:6379 --min-nodes 3 -- python entry.py``;
   static, no autoscaling. Time from sbatch to 6 one-CPU tasks started (the entry point runs
   them), to compare with row f (ours: 0 -> 6 one-CPU workers on a running head).
   It runs as rsl-eve with no other Ray on the machine: symmetric-run refuses to start where it
   finds any GCS process, and its final ``ray stop`` stops every Ray process of the user on the
   host — and the local site's nodes are one host. Each node gets its own ``--temp-dir`` (the
   nodes share /tmp here; on a real site they do not).
2. dask-jobqueue ``SLURMCluster(cores=1, memory="1000MB").adapt(minimum=0, maximum=3)``
   (``peers_dask``): a task submitted with no workers -> running on a new SLURM worker, and the
   time until the idle worker is gone; to compare with row a.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, log, median
from support.accounts import User, site_ray_env
from support.drivers import result
from support.procs import run, wait_for

from ray_slurm.slurm import Slurm

NODES, CPUS, TASKS = 3, 2, 6
USER = User("rsl-eve")

ENTRY = """
import json, sys, time, ray
ray.init()
@ray.remote(num_cpus=1)
def one():
    started = time.time()
    time.sleep(1)
    return started
starts = ray.get([one.remote() for _ in range({tasks})])
open(sys.argv[1], "w").write(json.dumps({{"first": min(starts), "all": max(starts)}}))
"""


def symmetric_script(workdir: Path, partition: str, node_addrs: dict[str, str]) -> str:
    cases = " ".join(f"{n}) ip={ip};;" for n, ip in node_addrs.items())
    ray_env = site_ray_env() / "bin"
    return f"""#!/bin/bash
#SBATCH --job-name=bench.symmetric
#SBATCH --partition={partition}
#SBATCH --nodes={NODES}
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task={CPUS}
#SBATCH --mem=3000M
#SBATCH --output={workdir}/symmetric-%j.log
export PATH={ray_env}:$PATH RAY_USAGE_STATS_ENABLED=0
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
case "$head_node" in {cases} esac
srun bash -c 'exec ray symmetric-run --address '"$ip"':6379 --min-nodes {NODES} \\
    --num-cpus {CPUS} --temp-dir=/tmp/rsym-$SLURM_JOB_ID-$SLURM_NODEID \\
    -- python {workdir}/entry.py {workdir}/times-$SLURM_JOB_ID.json'
"""


def symmetric(rounds: int, partition: str) -> dict[str, Any]:
    node_addrs = {n.name: n.addr for n in Slurm().nodes().values()}
    workdir = Path(tempfile.mkdtemp(prefix="rsym-", dir="/tmp"))
    os.chown(workdir, USER.uid, USER.uid)
    jobs: list[str] = []
    done = False
    try:
        USER.write(workdir / "entry.py", ENTRY.format(tasks=TASKS))
        script = USER.write(workdir / "symmetric.sh",
                            symmetric_script(workdir, partition, node_addrs))  # fmt: skip
        measured = []
        for _ in range(rounds):
            t0 = time.time()
            job = USER.run(["sbatch", "--parsable", str(script)], timeout=60).stdout.strip()
            jobs.append(job)
            times = workdir / f"times-{job}.json"
            wait_for(lambda: times.exists() and times.stat().st_size, 180,  # noqa: B023
                     f"symmetric-run job {job} to run its tasks", 0.05)  # fmt: skip
            got = json.loads(times.read_text())
            measured.append({"first_task_s": got["first"] - t0, "all_started_s": got["all"] - t0})
            wait_for(lambda: not USER.run(["squeue", "--noheader", f"--jobs={job}"],  # noqa: B023
                                          check=False).stdout.strip(), 120,
                     f"symmetric-run job {job} to end", 0.5)  # fmt: skip
            log(f"peer symmetric-run: {measured[-1]}")
        done = True
    finally:
        if jobs:  # a round that timed out must not leave its job holding the site's nodes
            USER.run(["scancel", *jobs], check=False, timeout=60)
        if done:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"peer symmetric-run failed: its job logs are kept in {workdir}")
    return {
        "rounds": len(measured),
        "first_task_s": median([m["first_task_s"] for m in measured]),
        "all_started_s": median([m["all_started_s"] for m in measured]),
        "raw": measured,
    }


def dask(rounds: int, partition: str, login_ip: str) -> dict[str, Any]:
    params = {"rounds": rounds, "partition": partition, "login_ip": login_ip}
    out = run([sys.executable, str(REPO / "bench" / "peers_dask.py"), json.dumps(params)],
              timeout=300 + 120 * rounds).stdout  # fmt: skip
    rs = result(out)["rounds"]
    return {
        "rounds": len(rs),
        "latency_s": median([r["latency_s"] for r in rs]),
        "latency_range_s": [min(r["latency_s"] for r in rs), max(r["latency_s"] for r in rs)],
        "idle_gone_s": median([r["idle_gone_s"] for r in rs]),
        "hosts": sorted({r["host"] for r in rs}),
    }


def measure(rounds: int, partition: str, login_ip: str) -> dict[str, Any]:
    """Both peers; a peer that fails is reported unavailable with its reason."""
    found: dict[str, Any] = {}
    for name, fn, args in (("symmetric_run", symmetric, (rounds, partition)),
                           ("dask_jobqueue", dask, (rounds, partition, login_ip))):  # fmt: skip
        try:
            found[name] = {"available": True, **fn(*args)}
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            found[name] = {"available": False, "why": f"{type(exc).__name__}: {exc}"}
            log(f"peer {name} unavailable: {exc}")
    return found
