"""Demo workload: tasks that need CPUs the cluster does not have, so workers are SLURM jobs.

Prints the cluster's nodes while it grows and where each task ran.
"""

import socket
import subprocess
import time

import ray


@ray.remote(num_cpus=2)
def work(i: int) -> tuple[int, str, str]:
    time.sleep(10)
    return i, socket.gethostname(), ray.util.get_node_ip_address()


def alive_workers() -> int:
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)


def main() -> None:
    ray.init()
    print(f"cluster CPUs before: {ray.cluster_resources().get('CPU', 0):.0f}", flush=True)
    pending = [work.remote(i) for i in range(4)]
    start = time.monotonic()
    done: list[tuple[int, str, str]] = []
    while pending:
        ready, pending = ray.wait(pending, timeout=5)
        done += ray.get(ready)
        jobs = subprocess.run(
            ["squeue", "--noheader", "--format=%j %T %N"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")
        workers = [j for j in jobs if ".worker." in j]
        print(
            f"t={time.monotonic() - start:5.1f}s  Ray workers alive: {alive_workers()}  "
            f"worker jobs: {workers}  tasks done: {len(done)}/4",
            flush=True,
        )
    for i, host, ip in sorted(done):
        print(f"task {i} ran on SLURM node {host} ({ip})")


if __name__ == "__main__":
    main()
