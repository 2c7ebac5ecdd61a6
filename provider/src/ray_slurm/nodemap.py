"""SLURM node name -> IP address: the address Ray must use for a node.

By default SLURM's own ``NodeAddr`` (what slurmctld uses to reach the node); a site whose Ray
traffic must use another interface provides a map file (YAML or JSON mapping ``name: ip``),
which the Ansible collection validates and writes. Passing the same address to
``ray start --node-ip-address`` and reporting it from ``internal_ip`` keeps the two in agreement
on multi-NIC nodes.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

from ray_slurm.net import route_ip
from ray_slurm.slurm import Slurm


class NodeMapError(ValueError):
    pass


def load_node_map(path: str) -> dict[str, str]:
    """Read and validate a map file; the error names the file and every bad entry."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise NodeMapError(f"node map {path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise NodeMapError(f"node map {path}: not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise NodeMapError(f"node map {path}: expected a non-empty mapping of node name to IP")
    problems = []
    for name, ip in data.items():
        try:
            ipaddress.ip_address(str(ip))
        except ValueError:
            problems.append(f"{name}: {ip!r} is not an IP address")
    if problems:
        raise NodeMapError(f"node map {path}: " + "; ".join(problems))
    return {str(name): str(ip) for name, ip in data.items()}


class NodeAddresses:
    """Looks node addresses up once per process: nodes do not change address while we run."""

    def __init__(self, slurm: Slurm, map_file: str = "") -> None:
        self._slurm = slurm
        self._map_file = map_file
        self._cache: dict[str, str] | None = None

    def login_ip(self, configured: str = "") -> str:
        """The login node's address as the compute nodes reach it: configured, or detected."""
        if configured:
            return configured
        any_node = next(iter(self._slurm.nodes().values()))  # StopIteration: SLURM has none
        return route_ip(any_node.addr)

    def ip(self, node_name: str) -> str:
        if self._cache is None or node_name not in self._cache:
            if self._map_file:
                self._cache = load_node_map(self._map_file)
            else:
                self._cache = {n.name: n.addr for n in self._slurm.nodes().values()}
        try:
            return self._cache[node_name]
        except KeyError:
            source = f"node map {self._map_file}" if self._map_file else "SLURM (sinfo NodeAddr)"
            raise NodeMapError(f"node {node_name!r} has no address in {source}") from None
