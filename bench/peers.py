"""g. What users would pick instead, on the same site with the same resources, each used as its
own documentation shows:

1. Ray's own SLURM recipe, ``ray symmetric-run`` (Ray 2.60): one sbatch of 3 nodes x 2 CPUs,
   ``srun ray symmetric-run --address <first node>:6379 --min-nodes 3 -- python entry.py``;
   static, no autoscaling. Time from sbatch to 6 one-CPU tasks started (the entry point runs
   them), to compare with row f (ours: 0 -> 6 one-CPU workers on a running head).
   It runs as rsl-eve with no other Ray on the machine: symmetric-run refuses to start where it
   finds any GCS process, and its final ``ray stop`` stops every Ray process of the user on the
   host — and the local site's nodes are one host. Each node gets its own Ray temp dir (the
   nodes share /tmp here; on a real site they do not): ``RAY_TMPDIR``, where symmetric-run's
   own ``ray.init()`` looks for the cluster, and ``--temp-dir`` there too, which joining nodes
   would otherwise take from the head.
2. dask-jobqueue ``SLURMCluster(cores=1, memory="1000MB").adapt(minimum=0, maximum=3)``
   (``peers_dask``): a task submitted with no workers -> running on a new SLURM worker, and the
   time until the idle worker is gone; to compare with row a.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import log, median
from support.accounts import User, site_ray_env
from support.drivers import result
from support.procs import WaitTimeout, wait_for

from ray_slurm.backends.slurm.client import Slurm

NODES, CPUS, TASKS = 3, 2, 6
USER = User("rsl-eve")
PEERS_VENV = Path("/var/tmp/rayhpc-bench-peers")  # dask-jobqueue's; the Makefile's PEERS_VENV

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
# Ray's token auth, with one token every node reads (else each may make its own)
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={workdir}/token
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
case "$head_node" in {cases} esac
srun bash -c 'export RAY_TMPDIR=/tmp/rsym-$SLURM_JOB_ID-$SLURM_NODEID
    mkdir -p -m 700 "$RAY_TMPDIR"
    exec ray symmetric-run --address '"$ip"':6379 --min-nodes {NODES} --num-cpus {CPUS} \\
    --temp-dir="$RAY_TMPDIR/ray" \\
    -- python {workdir}/entry.py {workdir}/times-$SLURM_JOB_ID.json'
"""


def symmetric(rounds: int, partition: str) -> dict[str, Any]:
    """Rounds that fail are reported with their reason and their logs kept; the figure is the
    median of the rounds that ran (unavailable if none did)."""
    node_addrs = {n.name: n.addr for n in Slurm().nodes().values()}
    workdir = Path(tempfile.mkdtemp(prefix="rsym-", dir="/tmp"))
    os.chown(workdir, USER.uid, USER.uid)
    USER.write(workdir / "entry.py", ENTRY.format(tasks=TASKS))
    USER.write(workdir / "token", secrets.token_hex(32), mode=0o600)
    script = USER.write(workdir / "symmetric.sh",
                        symmetric_script(workdir, partition, node_addrs))  # fmt: skip
    measured, failed = [], []
    for _ in range(rounds):
        t0 = time.time()
        job = USER.run(["sbatch", "--parsable", str(script)], timeout=60).stdout.strip()
        times = workdir / f"times-{job}.json"
        try:
            wait_for(lambda: times.exists() and times.stat().st_size, 90,  # noqa: B023
                     f"symmetric-run job {job} to run its tasks", 0.05)  # fmt: skip
            got = json.loads(times.read_text())
            measured.append({"first_task_s": got["first"] - t0, "all_started_s": got["all"] - t0})
            log(f"peer symmetric-run: {measured[-1]}")
        except WaitTimeout as exc:
            failed.append(str(exc))
            log(f"peer symmetric-run: {exc}; its log: {workdir}/symmetric-{job}.log")
        finally:
            # Its worker nodes' `ray start --block` outlive the head's end by Ray's GCS
            # reconnect timeout (60 s), and srun waits for them: the job is cancelled instead.
            USER.run(["scancel", job], timeout=60, check=False)
            wait_for(lambda: not USER.run(["squeue", "--noheader", f"--jobs={job}"],  # noqa: B023
                                          check=False).stdout.strip(), 120,
                     f"symmetric-run job {job} to end", 0.5)  # fmt: skip
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    if not measured:
        raise RuntimeError(f"no round ran: {failed[0]}")
    return {
        "rounds": len(measured),
        "failed_rounds": failed,
        "first_task_s": median([m["first_task_s"] for m in measured]),
        "all_started_s": median([m["all_started_s"] for m in measured]),
        "raw": measured,
    }


def dask(rounds: int, partition: str, login_ip: str, workdir: Path) -> dict[str, Any]:
    """As rsl-eve, with dask-jobqueue in its own venv of the site's system Python (the one the
    site's Ray environment is made of: ``make bench`` builds it), so both run the same Python.
    The script is the work dir's copy of the drivers (``common.user_workdir``)."""
    if not (PEERS_VENV / "bin" / "python").exists():
        raise RuntimeError(
            f"{PEERS_VENV} is missing: `make bench` builds it (requirements/bench.txt)"
        )
    params = {"rounds": rounds, "partition": partition, "login_ip": login_ip}
    script = workdir / "code" / "bench" / "peers_dask.py"
    out = USER.run([str(PEERS_VENV / "bin" / "python"), str(script), json.dumps(params)],
                   timeout=300 + 120 * rounds).stdout  # fmt: skip
    rs = result(out)["rounds"]
    return {
        "rounds": len(rs),
        "latency_s": median([r["latency_s"] for r in rs]),
        "latency_range_s": [min(r["latency_s"] for r in rs), max(r["latency_s"] for r in rs)],
        "idle_gone_s": median([r["idle_gone_s"] for r in rs]),
        "hosts": sorted({r["host"] for r in rs}),
    }


def measure(rounds: int, partition: str, login_ip: str, workdir: Path) -> dict[str, Any]:
    """Both peers; a peer that fails is reported unavailable with its reason."""
    found: dict[str, Any] = {}
    peers = (("symmetric_run", symmetric, (rounds, partition)),
             ("dask_jobqueue", dask, (rounds, partition, login_ip, workdir)))  # fmt: skip
    for name, fn, args in peers:
        try:
            found[name] = {"available": True, **fn(*args)}
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            found[name] = {"available": False, "why": f"{type(exc).__name__}: {exc}"}
            log(f"peer {name} unavailable: {exc}")
    return found
