"""``ray-slurm-node``: what a node's script needs before ``ray start``, in one quick process.

Every job script asks for this node's address for Ray (the node map, else SLURM's NodeAddr)
and for free ports. It is on the path of every scale-up, so it is one Python start-up that
imports only the standard library, the node map reader and the SLURM wrapper (~0.1 s), not the
``ray-slurm`` CLI with its templates and config model (~0.3 s a call, and it took two calls).
It also issues the node's TLS certificate (``ray_slurm.host.tls``) into the node's directory, which
the script made in ``provider.temp_root`` with ``mktemp -d``: first it checks that nobody else
could swap or read that directory (``temp_root`` owned by root or the user, sticky if others may
write to it: on a compute node as much as on the login node). Prints ``IP PORT...`` on one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path

from ray_slurm.backends.slurm.client import Slurm, SlurmError
from ray_slurm.backends.slurm.formats import NodeMapError
from ray_slurm.backends.slurm.nodemap import NodeAddresses
from ray_slurm.host.net import free_ports
from ray_slurm.host.private import UnsafePathError, check_private_dir

logger = logging.getLogger(__name__)

NODE_IP_WAIT_S = 180  # a job that starts while slurmctld is away waits this long for it
RETRY_S = 5.0


def node_ip(node: str, map_file: str, wait_s: float) -> str:
    """This node's address for Ray. A job can start while slurmctld is unreachable (it was
    allocated just before): it waits for SLURM to answer instead of failing, as SLURM jobs
    themselves ride out a controller restart."""
    addresses = NodeAddresses(Slurm(), map_file)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return addresses.ip(node)
        except SlurmError as exc:
            if time.monotonic() >= deadline:
                raise
            logger.warning("%s; retrying for up to %.0f s", exc, deadline - time.monotonic())
            time.sleep(RETRY_S)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ray-slurm-node",
        description="(in a node's script) print this node's address for Ray and PORTS free "
        "ports: IP PORT...",
    )
    parser.add_argument("ports", type=int, help="how many free ports")
    parser.add_argument("--seed", required=True, help="e.g. the job id: spreads jobs apart")
    parser.add_argument("--ip", default="", help="the address, if known (the login head)")
    parser.add_argument("--node", default="", help="SLURM node name (default: $SLURMD_NODENAME)")
    parser.add_argument("--node-map", default="", help="map file instead of SLURM's NodeAddr")
    parser.add_argument("--tls-ca", default="", help="the cluster's CA (key and certificate)")
    parser.add_argument("--tls-out", default="", help="private directory for this node's "
                        "TLS key and certificate, issued for its addresses")  # fmt: skip
    parser.add_argument("--wait", type=float, default=NODE_IP_WAIT_S,
                        help="seconds to wait for an unreachable slurmctld")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="ray-slurm-node: %(message)s")
    args = build_parser().parse_args(argv)
    node = args.node or os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    if args.tls_out:
        try:
            check_private_dir(args.tls_out)
        except UnsafePathError as exc:
            logger.error("provider.temp_root on %s: %s", node, exc)
            return 1
    try:
        ip = args.ip or node_ip(node, args.node_map, args.wait)
        ports = free_ports(args.ports, args.seed)
        if args.tls_ca:
            from ray_slurm.host import tls  # cryptography: imported only where a node needs it

            tls.issue(tls.read_ca(Path(args.tls_ca)), Path(args.tls_out), tls.host_addresses((ip,)))
    except (SlurmError, NodeMapError, RuntimeError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    print(" ".join([ip, *map(str, ports)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
