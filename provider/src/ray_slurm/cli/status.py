"""``ray-slurm status``: the cluster's nodes as their backends see them, and what the head's
autoscaler does about them: types it backs off, workers it rolls over, nodes that drain."""

from __future__ import annotations

import time
from typing import Any

from ray_slurm.backends import factory as backends
from ray_slurm.backends.slurm.client import Slurm
from ray_slurm.cluster.rollover import REASON_PREEMPTION, Rollover, clock
from ray_slurm.config import Settings
from ray_slurm.host.state import ClusterDir


def show(settings: Settings, cluster: ClusterDir) -> int:
    """Print the table of nodes (state, node, address, time left, reason), then the notes."""
    slurm = Slurm(settings.slurm_bin, settings.slurm_timeout_s)
    rows = [("TYPE", "KIND", "ID", "STATE", "NODE", "IP", "TIME LEFT", "REASON")]
    listed = set()
    for backend in backends.make(settings, cluster, slurm).values():  # only looking
        for n in sorted(backend.list_nodes().nodes, key=lambda n: (n.kind != "head", n.node_id)):
            ip = backend.address(n) if n.host else ""
            listed.add(n.node_id)
            rows.append((n.node_type, n.kind, n.node_id, n.state.value, n.host or "-", ip or "-",
                         n.time_left or "-", n.reason or "-"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if len(rows) == 1:
        print(f"(no node of cluster {settings.cluster_name})")
    state = cluster.read_state()
    print_draining(state, listed)
    print_failures(state.get("failures", {}))
    head = cluster.head()
    if head:
        print(f"autoscaler log: {head.autoscaler_log} (on {head.host})")
    return 0


def print_draining(state: dict[str, Any], listed: set[str]) -> None:
    """Workers being rolled over (the head's record) and nodes that drain (their own), of the
    nodes still listed."""
    for node_id, record in sorted(state.get("rollovers", {}).items()):
        if node_id in listed:
            print("roll-over: " + Rollover(node_id, **record).describe())
    for node_id, entry in sorted(state.get("nodes", {}).items()):
        drain = entry.get("drain")
        if drain and node_id in listed:
            why = "preempted" if drain["reason"] == REASON_PREEMPTION else "time limit"
            print(f"draining: {node_id} since {clock(drain['since'])} ({why}, its job ends at "
                  f"{clock(drain['end'])}): no new work; running tasks have until "
                  f"{clock(drain['deadline'])}")  # fmt: skip


def print_failures(failures: dict[str, dict[str, Any]]) -> None:
    """Node types the head's autoscaler backs off: why, and until when (its state record)."""
    for node_type, record in sorted(failures.items()):
        until = float(record["until"])
        if until > time.time():
            when = "no new node before " + clock(until)
        else:
            when = "trying again, one node at a time until one starts"
        print(f"node type {node_type} failed {record['count']} time(s), {when}: {record['why']}")
