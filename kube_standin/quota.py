"""ResourceQuota admission: the 403 a namespace's quota gives a pod that does not fit.

Clouds and admins cap a burst namespace with a ResourceQuota; the provider must recognise the
``exceeded quota`` refusal and stop asking. Quotas here are ordinary ``ResourceQuota`` objects
(created through the API, or by ``scripts/kube-standin up --quota-pods/--quota-cpu``); usage is
computed from the pods that are not yet Succeeded or Failed, the way the quota controller counts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .errors import forbidden
from .quantity import format_quantity, parse_quantity

# quota key -> (kind of object it counts, or the pod resource it sums)
_ALIASES = {"cpu": "requests.cpu", "memory": "requests.memory"}
_COUNTS = {
    "pods": "pods",
    "count/pods": "pods",
    "secrets": "secrets",
    "count/secrets": "secrets",
    "services": "services",
    "count/services": "services",
}
TERMINAL = ("Succeeded", "Failed")


def pod_usage(pod: dict[str, Any]) -> dict[str, Decimal]:
    """What one pod counts against a quota; a request defaults to its limit, as in the API."""
    usage = {"pods": Decimal(1)}
    for container in pod["spec"]["containers"]:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        for name in ("cpu", "memory"):
            request = requests.get(name, limits.get(name))
            if request is not None:
                key = f"requests.{name}"
                usage[key] = usage.get(key, Decimal(0)) + parse_quantity(request)
            if name in limits:
                key = f"limits.{name}"
                usage[key] = usage.get(key, Decimal(0)) + parse_quantity(limits[name])
    return usage


def _missing(pod: dict[str, Any], key: str) -> bool:
    part, name = key.split(".", 1)
    for container in pod["spec"]["containers"]:
        resources = container.get("resources") or {}
        have = resources.get(part) or {}
        if part == "requests":
            have = {**(resources.get("limits") or {}), **have}
        if name not in have:
            return True
    return False


def _fmt(key: str, value: Decimal) -> str:
    return f"{key}={format_quantity(value, memory=key.endswith('memory'))}"


def used(resource: str, objects: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Current usage in a namespace, given its objects of the kind ``resource``."""
    if resource != "pods":
        return {resource: Decimal(len(objects))}
    total: dict[str, Decimal] = {}
    for pod in objects:
        if pod.get("status", {}).get("phase") in TERMINAL:
            continue
        for key, value in pod_usage(pod).items():
            total[key] = total.get(key, Decimal(0)) + value
    return total


def quota_status(quota: dict[str, Any], usage: dict[str, dict[str, Decimal]]) -> dict[str, Any]:
    """``status.hard``/``status.used`` of a quota, given usage per counted kind."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    status_used = {}
    for key in hard:
        name = _ALIASES.get(key, key)
        kind = _COUNTS.get(name, "pods")
        value = usage.get(kind, {}).get(_COUNTS.get(name) or name, Decimal(0))
        status_used[key] = format_quantity(value, memory=name.endswith("memory"))
    return {"hard": dict(hard), "used": status_used}


def admit(
    resource: str,
    obj: dict[str, Any],
    quotas: list[dict[str, Any]],
    current: dict[str, Decimal],
) -> None:
    """Raise 403 Forbidden if creating ``obj`` would exceed any quota of its namespace."""
    name = obj["metadata"]["name"]
    requested = pod_usage(obj) if resource == "pods" else {resource: Decimal(1)}
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        qname = quota["metadata"]["name"]
        hard = (quota.get("spec") or {}).get("hard") or {}
        relevant = {}
        for key, limit in hard.items():
            name_key = _ALIASES.get(key, key)
            counted = _COUNTS.get(name_key)
            if counted is not None and counted != resource:
                continue
            if counted is None and resource != "pods":
                continue
            relevant[_COUNTS.get(name_key) or name_key] = (key, parse_quantity(limit))
        if resource == "pods":
            missing = sorted(key for key in relevant if key != "pods" and _missing(obj, key))
            if missing:
                raise forbidden(
                    resource, name, f"failed quota: {qname}: must specify {','.join(missing)}"
                )
        exceeded = [
            (key, label, limit)
            for key, (label, limit) in relevant.items()
            if current.get(key, Decimal(0)) + requested.get(key, Decimal(0)) > limit
        ]
        if exceeded:
            req = ",".join(
                _fmt(label, requested.get(key, Decimal(0))) for key, label, _ in exceeded
            )
            use = ",".join(_fmt(label, current.get(key, Decimal(0))) for key, label, _ in exceeded)
            lim = ",".join(_fmt(label, limit) for _, label, limit in exceeded)
            raise forbidden(
                resource,
                name,
                f"exceeded quota: {qname}, requested: {req}, used: {use}, limited: {lim}",
            )
