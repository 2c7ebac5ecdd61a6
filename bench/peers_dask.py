"""Peer: dask-jobqueue's SLURMCluster with adapt(), as its documentation shows it, on the site.

Run on the login node (the scheduler runs here, workers are SLURM jobs):
``python bench/peers_dask.py '{"rounds": 5, "partition": "debug", "login_ip": "10.77.0.1"}'``.
Each round: a task submitted to a cluster with no workers -> it runs on a new SLURM worker (the
latency), then the time until the idle worker is gone. Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from dask_jobqueue import SLURMCluster
from distributed import Client

P = json.loads(sys.argv[1])


def where() -> tuple[float, str]:
    return time.time(), socket.gethostname()


def workers(client: Client) -> int:
    return len(client.scheduler_info()["workers"])


def wait(condition, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(0.05)
    return time.time()


def main() -> None:
    cluster = SLURMCluster(
        cores=1,
        memory="1000MB",
        processes=1,
        queue=P["partition"],
        walltime="00:30:00",
        python=sys.executable,
        local_directory="/tmp",
        scheduler_options={"host": P["login_ip"]},
        job_extra_directives=["--output=/dev/null"],
    )
    cluster.adapt(minimum=0, maximum=3)
    client = Client(cluster)
    rounds = []
    try:
        for _ in range(P["rounds"]):
            wait(lambda: workers(client) == 0, 120, "no dask worker")
            t0 = time.time()
            started, host = client.submit(where, pure=False).result(timeout=300)
            done = time.time()
            gone = wait(lambda: workers(client) == 0, 120, "the idle worker gone")
            rounds.append({"latency_s": started - t0, "host": host, "idle_gone_s": gone - done})
            print(f"dask round: {rounds[-1]}", file=sys.stderr, flush=True)
    finally:
        client.close()
        cluster.close()
    print("RESULT " + json.dumps({"rounds": rounds}))


if __name__ == "__main__":
    main()
