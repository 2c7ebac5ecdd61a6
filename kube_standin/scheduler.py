"""Which cloud host a pod may run on, and the scheduler's message when none fits.

The stand-in's scheduling model is deliberately small: one pod per cloud host (as hostNetwork pods
on small VMs, or a node pool of one-pod nodes), each host with a fixed CPU/memory capacity, labels
and taints. A pod fits a free host whose labels match its ``nodeSelector`` and required node
affinity, whose taints it tolerates, and whose capacity covers its requests; otherwise it stays
Pending with ``PodScheduled=False, reason=Unschedulable`` and a message in the real scheduler's
words, which is what the provider's "never reached Running" report needs to show.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .cloudhosts import CloudHost
from .quantity import format_quantity, parse_quantity


@dataclass
class HostShape:
    """What every cloud host offers (the same for all hosts, like one node pool)."""

    cpu: Decimal = Decimal(2)
    memory: Decimal = Decimal(4 * 2**30)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)

    def node_labels(self, host: CloudHost) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": host.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "standin",
            **self.labels,
        }


def pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    """Summed container requests; a request defaults to its limit, as in the API."""
    total: dict[str, Decimal] = {}
    for container in pod["spec"]["containers"]:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in wanted.items():
            total[name] = total.get(name, Decimal(0)) + parse_quantity(value)
    return total


def _expression(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels:
        try:
            a, b = int(labels[key]), int(values[0])
        except (ValueError, IndexError):
            return False
        return a > b if op == "Gt" else a < b
    return False


def _matches_node(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    spec = pod["spec"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    return any(
        all(_expression(e, labels) for e in term.get("matchExpressions") or []) for term in terms
    )


def _tolerates(pod: dict[str, Any], taint: dict[str, str]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for tol in pod["spec"].get("tolerations") or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and not tol.get("key"):
            return True
        if tol.get("key") != taint.get("key"):
            continue
        if tol.get("operator") == "Exists" or tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def why_not(pod: dict[str, Any], host: CloudHost, shape: HostShape, busy: bool) -> str | None:
    """None if the pod fits the host, else the scheduler's reason for this one host."""
    if not _matches_node(pod, shape.node_labels(host)):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in shape.taints:
        if not _tolerates(pod, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    capacity = {"cpu": shape.cpu, "memory": shape.memory, "pods": Decimal(1)}
    for name, value in pod_requests(pod).items():
        if value > capacity.get(name, Decimal(0)):
            return f"Insufficient {name}"
    if busy:
        return "node(s) already run a pod (stand-in: one pod per cloud host)"
    return None


def choose(
    pod: dict[str, Any], hosts: list[CloudHost], shape: HostShape, busy: set[str]
) -> tuple[CloudHost | None, str]:
    """The first free host the pod fits, or None and a FailedScheduling-style message."""
    reasons: Counter[str] = Counter()
    for host in hosts:
        reason = why_not(pod, host, shape, host.name in busy)
        if reason is None:
            return host, ""
        reasons[reason] += 1
    detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return None, f"0/{len(hosts)} nodes are available: {detail}."


def node_object(host: CloudHost, shape: HostShape, created: str) -> dict[str, Any]:
    """A read-only Node for ``GET /api/v1/nodes`` (what a check of the pool would look at)."""
    capacity = {
        "cpu": format_quantity(shape.cpu),
        "memory": format_quantity(shape.memory, memory=True),
        "pods": "1",
    }
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": host.name,
            "uid": f"node-{host.name}",
            "resourceVersion": "1",
            "creationTimestamp": created,
            "labels": shape.node_labels(host),
        },
        "spec": {"taints": list(shape.taints)} if shape.taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": [
                {"type": "InternalIP", "address": host.ip},
                {"type": "Hostname", "address": host.name},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }
