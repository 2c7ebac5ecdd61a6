"""SLURM node name -> IP address: the address Ray must use for a node.

By default SLURM's own ``NodeAddr`` (what slurmctld uses to reach the node); a site whose Ray
traffic must use another interface provides a map file (YAML or JSON mapping ``name: ip``),
which the Ansible collection validates and writes. Passing the same address to
``ray start --node-ip-address`` and reporting it from ``internal_ip`` keeps the two in agreement
on multi-NIC nodes.
"""

from __future__ import annotations

from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.backends.slurm.formats import NodeMapError, load_node_map
from ray_slurm.host.net import route_ip


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
