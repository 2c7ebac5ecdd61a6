"""Cloud hosts: one network namespace per host, wired into the local site's login bridge.

A burst pod must be a different machine on the network for Ray (its own IP, reachable from the
head on the login node, and able to reach it), just as the local SLURM site's compute nodes are.
Each host is a namespace ``<prefix><i>`` with a veth ``eth0`` at ``<subnet>.<ip_base + i>/24`` whose
peer is enslaved to ``br0`` in the login namespace (built by ``scripts/localsite up``). Both veth
ends are created inside namespaces, so no address of the subnet ever exists in the root namespace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("kube_standin.cloudhosts")

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class CloudHost:
    """One host: its namespace name (also its Node name and hostname), IP and bridge-side peer."""

    name: str
    ip: str
    peer: str


def plan_hosts(prefix: str, count: int, subnet: str, ip_base: int) -> list[CloudHost]:
    """The hosts ``prefix1..prefixN`` at ``subnet.(ip_base+i)``; ValueError if they cannot exist."""
    if count < 1 or ip_base + count > 254 or ip_base < 1:
        raise ValueError(f"{count} hosts from .{ip_base + 1} do not fit in {subnet}.0/24")
    hosts = []
    for i in range(1, count + 1):
        name = f"{prefix}{i}"
        peer = "v" + name.removeprefix("rsl-")
        if len(peer) > 15:
            raise ValueError(f"interface name {peer!r} is longer than 15 characters")
        hosts.append(CloudHost(name, f"{subnet}.{ip_base + i}", peer))
    return hosts


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(host: CloudHost, login_ns: str, bridge: str = "br0", prefix_len: int = 24) -> None:
    """(Re)create a host's namespace and link; a leftover namespace of that name is replaced."""
    if not exists(login_ns):
        raise RuntimeError(
            f"network namespace {login_ns} does not exist: start the local site first "
            "(scripts/localsite up)"
        )
    if exists(host.name):
        destroy(host.name)
    _ip("netns", "add", host.name)
    try:
        _ip("-n", host.name, "link", "set", "lo", "up")
        _ip(
            "-n",
            host.name,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            host.peer,
            "netns",
            login_ns,
        )
        _ip("-n", host.name, "addr", "add", f"{host.ip}/{prefix_len}", "dev", "eth0")
        _ip("-n", host.name, "link", "set", "eth0", "up")
        _ip("-n", login_ns, "link", "set", host.peer, "master", bridge)
        _ip("-n", login_ns, "link", "set", host.peer, "up")
    except RuntimeError:
        destroy(host.name)
        raise
    log.info("cloud host %s up at %s", host.name, host.ip)


def pids_in(name: str) -> list[int]:
    """Every process whose network namespace is the host's (what `ip netns pids` prints)."""
    try:
        target = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def kill_all(name: str, sig: int = signal.SIGKILL) -> int:
    """Signal every process in the host; one pod per host makes them all that pod's."""
    pids = pids_in(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return len(pids)


def destroy(name: str) -> None:
    """Kill what runs in the host and delete its namespace (its veth pair goes with it)."""
    kill_all(name)
    if exists(name):
        proc = subprocess.run(
            ["ip", "netns", "del", name], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 and exists(name):
            log.warning("ip netns del %s: %s", name, proc.stderr.strip())
        else:
            log.info("cloud host %s removed", name)
