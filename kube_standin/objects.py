"""Validation and defaulting of the stored kinds, as the API server does them on create/update.

The provider must see the same answers a real cluster gives for the same bodies: 422 ``Invalid``
with field causes for a pod without containers or with a bad quantity, defaults filled in
(restartPolicy, grace period, clusterIP, secret ``stringData`` folded into ``data``), and no pod
spec changes after creation.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import re
import secrets
from typing import Any

from .errors import ApiError, bad_request, invalid
from .quantity import parse_quantity

# resource (URL plural) -> (kind, namespaced)
KINDS: dict[str, tuple[str, bool]] = {
    "pods": ("Pod", True),
    "secrets": ("Secret", True),
    "services": ("Service", True),
    "resourcequotas": ("ResourceQuota", True),
    "namespaces": ("Namespace", False),
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CLUSTER_IPS = itertools.count(10)

Cause = tuple[str, str, str]


def _check_name(name: Any, field: str, label: bool, causes: list[Cause]) -> None:
    pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
    if not name:
        causes.append(
            (field, "FieldValueRequired", "Required value: name or generateName is required")
        )
    elif not isinstance(name, str) or len(name) > limit or not pattern.match(name):
        causes.append(
            (
                field,
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 '
                f"{'label' if label else 'subdomain'} must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        )


def _check_labels(meta: dict[str, Any], causes: list[Cause]) -> None:
    for field in ("labels", "annotations"):
        values = meta.get(field) or {}
        if not isinstance(values, dict):
            causes.append((f"metadata.{field}", "FieldValueInvalid", "Invalid value: not a map"))
            continue
        for key, value in values.items():
            name = key.rsplit("/", 1)[-1]
            if not _LABEL_NAME.match(name) or len(name) > 63:
                causes.append(
                    (f"metadata.{field}", "FieldValueInvalid", f'Invalid value: "{key}": bad key')
                )
            if not isinstance(value, str) or (
                field == "labels" and (len(value) > 63 or not _LABEL_VALUE.match(value))
            ):
                causes.append(
                    (f"metadata.{field}", "FieldValueInvalid", f'Invalid value: "{value}"')
                )


def prepare_metadata(body: Any, resource: str, namespace: str | None) -> dict[str, Any]:
    """Check the envelope of a create body and fill in ``generateName``."""
    kind = KINDS[resource][0]
    if not isinstance(body, dict):
        raise bad_request(f"the body of a {kind} must be a JSON object")
    if body.get("kind") not in (None, kind):
        raise bad_request(f"the kind of the body ({body.get('kind')}) is not {kind}")
    meta = body.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise bad_request("metadata must be a JSON object")
    if namespace is not None:
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        meta["namespace"] = namespace
    if not meta.get("name") and meta.get("generateName"):
        suffix = "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
        meta["name"] = f"{meta['generateName'][:58]}{suffix}"
    body["kind"], body["apiVersion"] = kind, "v1"
    return meta


def _check_resources(container: dict[str, Any], field: str, causes: list[Cause]) -> None:
    resources = container.get("resources") or {}
    for part in ("requests", "limits"):
        for name, value in (resources.get(part) or {}).items():
            try:
                if parse_quantity(value) < 0:
                    raise ValueError("must be greater than or equal to 0")
            except ValueError as exc:
                causes.append(
                    (
                        f"{field}.resources.{part}[{name}]",
                        "FieldValueInvalid",
                        f"Invalid value: {exc}",
                    )
                )


def _validate_pod(body: dict[str, Any], causes: list[Cause]) -> None:
    spec = body.get("spec")
    if not isinstance(spec, dict):
        causes.append(("spec", "FieldValueRequired", "Required value"))
        return
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        causes.append(("spec.containers", "FieldValueRequired", "Required value"))
        return
    seen: set[str] = set()
    for i, container in enumerate(containers):
        field = f"spec.containers[{i}]"
        if not isinstance(container, dict):
            causes.append((field, "FieldValueInvalid", "Invalid value: not an object"))
            continue
        _check_name(container.get("name"), f"{field}.name", True, causes)
        if container.get("name") in seen:
            causes.append((f"{field}.name", "FieldValueDuplicate", "Duplicate value"))
        seen.add(container.get("name"))
        if not container.get("image"):
            causes.append((f"{field}.image", "FieldValueRequired", "Required value"))
        for key in ("command", "args"):
            value = container.get(key)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                causes.append((f"{field}.{key}", "FieldValueInvalid", "Invalid value: not strings"))
        _check_resources(container, field, causes)
    if spec.get("restartPolicy", "Always") not in ("Always", "OnFailure", "Never"):
        causes.append(("spec.restartPolicy", "FieldValueNotSupported", "Unsupported value"))


def _default_pod(body: dict[str, Any]) -> None:
    spec = body["spec"]
    spec.pop("nodeName", None)  # the stand-in always schedules (see docs/kubernetes-standin.md)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec["containers"]:
        tag = container["image"].rsplit("/", 1)[-1]
        latest = ":" not in tag or tag.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("resources", {})
    body["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}


def _qos_class(spec: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in spec["containers"]]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        set(r.get("limits") or {}) >= {"cpu", "memory"}
        and all(
            (r.get("requests") or {}).get(k, v) == v for k, v in (r.get("limits") or {}).items()
        )
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _validate_secret(body: dict[str, Any], causes: list[Cause]) -> None:
    data = body.get("data") or {}
    string_data = body.pop("stringData", None) or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        causes.append(("data", "FieldValueInvalid", "Invalid value: not a map"))
        return
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            causes.append(
                (f"data[{key}]", "FieldValueInvalid", "Invalid value: illegal base64 data")
            )
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    body["data"] = data
    body.setdefault("type", "Opaque")


def _validate_service(body: dict[str, Any], causes: list[Cause]) -> None:
    spec = body.setdefault("spec", {})
    headless = spec.get("clusterIP") == "None"
    ports = spec.get("ports") or []
    if not ports and not headless:
        causes.append(("spec.ports", "FieldValueRequired", "Required value"))
    for i, port in enumerate(ports):
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            causes.append((f"spec.ports[{i}].port", "FieldValueRequired", "Required value"))
            continue
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])
    spec.setdefault("type", "ClusterIP")
    if not spec.get("clusterIP"):
        # Addresses are only bookkeeping: the stand-in does not route service traffic.
        spec["clusterIP"] = str(ipaddress.ip_address("10.96.0.0") + next(_CLUSTER_IPS))
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    body.setdefault("status", {"loadBalancer": {}})


def _validate_quota(body: dict[str, Any], causes: list[Cause]) -> None:
    hard = (body.get("spec") or {}).get("hard") or {}
    for name, value in hard.items():
        try:
            parse_quantity(value)
        except ValueError as exc:
            causes.append((f"spec.hard[{name}]", "FieldValueInvalid", f"Invalid value: {exc}"))


def validate_create(resource: str, body: dict[str, Any]) -> None:
    """Raise 422 Invalid with every problem found; fill in defaults on success."""
    kind, namespaced = KINDS[resource]
    meta = body["metadata"]
    causes: list[Cause] = []
    _check_name(meta.get("name"), "metadata.name", resource == "namespaces", causes)
    _check_labels(meta, causes)
    {
        "pods": _validate_pod,
        "secrets": _validate_secret,
        "services": _validate_service,
        "resourcequotas": _validate_quota,
        "namespaces": lambda body, causes: None,
    }[resource](body, causes)
    if causes:
        raise invalid(kind, str(meta.get("name") or meta.get("generateName") or ""), causes)
    if resource == "pods":
        _default_pod(body)
    if resource == "namespaces":
        body["status"] = {"phase": "Active"}


def validate_update(resource: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Updates may change labels and annotations; a pod's spec and every object's identity stay."""
    kind = KINDS[resource][0]
    name = old["metadata"]["name"]
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        if new.get("metadata", {}).get(key) != old["metadata"].get(key):
            raise invalid(
                kind, name, [(f"metadata.{key}", "FieldValueInvalid", "field is immutable")]
            )
    causes: list[Cause] = []
    _check_labels(new["metadata"], causes)
    if causes:
        raise invalid(kind, name, causes)
    if resource == "pods" and new.get("spec") != old.get("spec"):
        raise invalid(
            kind,
            name,
            [
                (
                    "spec",
                    "FieldValueForbidden",
                    "Forbidden: pod updates may not change fields other "
                    "than metadata labels and annotations (in the stand-in)",
                )
            ],
        )
    if (
        resource == "services"
        and (new.get("spec") or {}).get("clusterIP") != old["spec"]["clusterIP"]
    ):
        raise invalid(kind, name, [("spec.clusterIP", "FieldValueInvalid", "field is immutable")])
    if resource == "secrets":
        _validate_secret(new, causes)
        if causes:
            raise invalid(kind, name, causes)
    if new.get("kind") != old.get("kind"):
        raise ApiError(400, "the kind of an object cannot be changed")
