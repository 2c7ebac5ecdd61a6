"""This host's side of the network: which ports are free, which address reaches a node.

Used by the node scripts (``ray-slurm-node``), the provider (the login head's address)
and ``ray-slurm check`` alike, so that the check tests exactly what ``ray up`` will use.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Collection

# Head ports lie above Ray's worker port range (10002-19999) and Ray Client's per-connection
# servers (from 23000), below the kernel's ephemeral range (32768+) that Ray's random ports use.
PORT_RANGE = (24000, 32000)
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def free_ports(count: int, seed: str, port_range: tuple[int, int] = PORT_RANGE) -> list[int]:
    """``count`` ports free on this host right now, starting at a point derived from ``seed``.

    Two jobs on one node have different seeds (job ids), so they start far apart; the bind test
    skips ports another process already holds.
    """
    low, high = port_range
    span = high - low
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % span
    ports: list[int] = []
    for offset in range(span):
        port = low + (start + offset) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))  # noqa: S104 - probing, Ray binds all interfaces too
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"fewer than {count} free ports in {low}-{high}")


def route_ip(destination: str) -> str:
    """This host's address on the way to ``destination`` (the kernel's route choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((destination, 9))  # UDP connect sends nothing; it only picks the route
        return str(s.getsockname()[0])


def is_local_address(ip: str) -> bool:
    """Whether this host owns ``ip`` (binding to an address of another host fails)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
    return True


def listeners(ports: Collection[int]) -> dict[int, set[int]]:
    """For each of ``ports``, the uids of the sockets listening on it in this network namespace.

    From ``/proc/net/tcp`` and ``tcp6``, which every account can read (hidepid or not): this is
    how a neighbour sees which ports a user holds, and how the head checks that it holds its own.
    """
    found: dict[int, set[int]] = {port: set() for port in ports}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue  # no IPv6 here
        for line in lines:
            fields = line.split()
            if len(fields) < 8 or fields[3] != TCP_LISTEN:
                continue
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port in found:
                found[port].add(int(fields[7]))
    return found
