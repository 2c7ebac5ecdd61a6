"""A container's environment, command and arguments, resolved the way a kubelet resolves them.

A burst worker gets the cluster's token from a Secret (``valueFrom.secretKeyRef``) and its own
name and address from the downward API (``fieldRef``), and its command may use ``$(VAR)``
references; the stand-in must resolve all of these, and fail a missing secret with the kubelet's
``CreateContainerConfigError`` so the provider sees what it would see on a real cluster.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from typing import Any

from .quantity import parse_quantity

SecretLookup = Callable[[str, str], dict[str, Any] | None]
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


class ConfigError(Exception):
    """The container cannot be created yet (reason ``CreateContainerConfigError``)."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, others stay."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REF.sub(sub, text)


def _field(pod: dict[str, Any], path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": status.get("podIP"),
        "status.hostIPs": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if match := _FIELD_LABEL.match(path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _resource(container: dict[str, Any], ref: dict[str, Any]) -> str:
    part, _, name = str(ref.get("resource", "")).partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(part) or {}).get(name)
    if value is None and part == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        raise ConfigError(f"resourceFieldRef {ref.get('resource')!r} has no value in the container")
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


def _secret_data(namespace: str, name: str, lookup: SecretLookup, optional: bool) -> dict[str, str]:
    secret = lookup(namespace, name)
    if secret is None:
        if optional:
            return {}
        raise ConfigError(f'secret "{name}" not found')
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _value_from(
    pod: dict[str, Any], container: dict[str, Any], source: dict[str, Any], lookup: SecretLookup
) -> str | None:
    namespace = pod["metadata"]["namespace"]
    if ref := source.get("secretKeyRef"):
        data = _secret_data(namespace, ref.get("name", ""), lookup, bool(ref.get("optional")))
        if ref.get("key") not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(
                f"couldn't find key {ref.get('key')} in Secret {namespace}/{ref.get('name')}"
            )
        return data[ref["key"]]
    if ref := source.get("fieldRef"):
        return _field(pod, ref.get("fieldPath", ""))
    if ref := source.get("resourceFieldRef"):
        return _resource(container, ref)
    raise ConfigError(f"unsupported valueFrom {sorted(source)} (the stand-in has no ConfigMaps)")


def resolve(
    pod: dict[str, Any], container: dict[str, Any], base: dict[str, str], lookup: SecretLookup
) -> tuple[dict[str, str], list[str]]:
    """The container's environment (``base`` overridden by envFrom, then env) and its argv."""
    env = dict(base)
    namespace = pod["metadata"]["namespace"]
    for source in container.get("envFrom") or []:
        if ref := source.get("secretRef"):
            data = _secret_data(namespace, ref.get("name", ""), lookup, bool(ref.get("optional")))
            env.update({f"{source.get('prefix', '')}{k}": v for k, v in data.items()})
        else:
            raise ConfigError("envFrom supports only secretRef in the stand-in")
    for var in container.get("env") or []:
        if "valueFrom" in var:
            value = _value_from(pod, container, var["valueFrom"], lookup)
            if value is None:
                continue
        else:
            value = expand(str(var.get("value", "")), env)
        env[var["name"]] = value
    argv = [
        expand(a, env) for a in (container.get("command") or []) + (container.get("args") or [])
    ]
    if not container.get("command"):
        raise ConfigError("stand-in images have no entrypoint: the container must give a command")
    return env, argv
