"""Ray programs the harness runs on a cluster; each prints one line ``RESULT <json>``."""

from __future__ import annotations

import json
from typing import Any

WHERE = """
import json, socket, time, ray
ray.init()
@ray.remote(num_cpus={cpus})
def where(seconds):
    time.sleep(seconds)
    return socket.gethostname(), ray.util.get_node_ip_address()
print("RESULT " + json.dumps(ray.get([where.remote({seconds}) for _ in range({tasks})])))
"""


def where_tasks(tasks: int, seconds: float, cpus: int = 2) -> str:
    """A driver that runs ``tasks`` tasks of ``cpus`` CPUs and prints where each ran."""
    return WHERE.format(tasks=tasks, seconds=seconds, cpus=cpus)


def result(stdout: str) -> Any:
    """The JSON a driver printed after ``RESULT ``."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def parse_result(stdout: str) -> list[tuple[str, str]]:
    """``where_tasks``' answer: (hostname, node IP) of each task."""
    return [(str(host), str(ip)) for host, ip in result(stdout)]
