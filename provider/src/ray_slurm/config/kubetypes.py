"""Kubernetes node types: what a burst pod is asked for, checked before any pod is created.

A node type with ``node_config.backend: kubernetes`` runs its nodes as pods. Its CPU, memory and
GPU keys are the same as a SLURM type's (checked in ``nodetypes``); this module checks the rest —
image, namespace, scheduling hints — and the ``provider.kubernetes`` section. Problems name the
field and the bad value, like every other config check.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray_slurm.host.private import user_name

KUBE_NODE_CONFIG_KEYS = {
    "backend", "image", "cpus", "memory", "gpus", "object_store_memory", "namespace",
    "node_selector", "tolerations", "service_account", "pending_timeout_s", "host_network",
}  # fmt: skip
PROVIDER_KUBE_KEYS = {"kubeconfig", "context", "namespace", "request_timeout_s"}
DEFAULT_NAMESPACE = "default"
DEFAULT_REQUEST_TIMEOUT_S = 10

# RFC 1123 label (namespaces, service accounts); label values; label keys with optional prefix.
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
# The tag of an image that states its Ray (and Python) version, as rayproject/ray's tags do:
# 2.60.0, 2.60.0-py312, 2.60.0-py312-cpu.
VERSION_TAG_RE = re.compile(r"^(\d+\.\d+\.\d+)(?:-py(\d)(\d+))?(?:-|$)")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
TOLERATION_OPERATORS = {"Equal", "Exists"}
TAINT_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}


USER_PLACEHOLDER = "{user}"


def resolve_namespace(namespace: str) -> str:
    """``{user}`` in a namespace is the user's login name as a DNS label (``J.Doe`` -> ``j-doe``).

    With ``namespace: ray-{user}`` one site config gives every user a namespace of their own, where
    the site's RBAC lets only them read their cluster's token Secret and act on their pods.
    """
    if USER_PLACEHOLDER not in namespace:
        return namespace
    label = re.sub(r"[^a-z0-9-]+", "-", user_name().lower()).strip("-")
    return namespace.replace(USER_PLACEHOLDER, label)


def _namespace(value: Any, where: str, problems: list[str]) -> str:
    """A namespace setting, resolved; a problem if it is not a namespace name (for this user)."""
    given = str(value)
    namespace = resolve_namespace(given)
    if not DNS_LABEL_RE.match(namespace):
        problems.append(f"{where}.namespace: {given!r} is not a Kubernetes namespace name"
                        + (f" (for you: {namespace!r})" if given != namespace else ""))  # fmt: skip
    return namespace


@dataclass(frozen=True)
class KubeConnection:
    """The ``provider.kubernetes`` section: how to reach the API server."""

    kubeconfig: str = ""  # "" = in-cluster config if inside a pod, else the client's default
    context: str = ""
    namespace: str = DEFAULT_NAMESPACE
    request_timeout_s: int = DEFAULT_REQUEST_TIMEOUT_S


@dataclass(frozen=True)
class PodOptions:
    """What a Kubernetes node type adds to its resources: where and how its pods run."""

    image: str
    namespace: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    service_account: str = ""
    host_network: bool = False  # the pod uses its node's network (when pod IPs are not routed)


def head_versions() -> str:
    """``"<ray> <python major.minor>"`` of this process: the head's, since the head runs it."""
    try:
        ray = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        ray = "unknown"
    return f"{ray} {sys.version_info.major}.{sys.version_info.minor}"


def image_mismatch(image: str, expected: str) -> str | None:
    """Why an image's tag shows Ray/Python other than ``expected``; None if it does not say."""
    if "@" in image:
        return None  # a digest: only the pod's own check can tell
    name_tag = image.rsplit("/", 1)[-1]
    if ":" not in name_tag:
        return None
    match = VERSION_TAG_RE.match(name_tag.split(":", 1)[1])
    if not match:
        return None
    ray, py = expected.split(" ")
    if match.group(1) != ray:
        return f"its tag says Ray {match.group(1)}, the head runs Ray {ray}"
    if match.group(2) and f"{match.group(2)}.{match.group(3)}" != py:
        return f"its tag says Python {match.group(2)}.{match.group(3)}, the head runs Python {py}"
    return None


def check_connection(section: Any, problems: list[str]) -> KubeConnection:
    where = "provider.kubernetes"
    if section is None:
        return KubeConnection()
    if not isinstance(section, Mapping):
        problems.append(f"{where}: expected a mapping, got {section!r}")
        return KubeConnection()
    for key in sorted(set(section) - PROVIDER_KUBE_KEYS):
        problems.append(f"{where}: unknown key {key!r}")
    namespace = _namespace(section.get("namespace", DEFAULT_NAMESPACE), where, problems)
    for key in ("kubeconfig", "context"):
        value = section.get(key, "")
        if not isinstance(value, str):
            problems.append(f"{where}.{key}: expected a string, got {value!r}")
    timeout = section.get("request_timeout_s", DEFAULT_REQUEST_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        problems.append(f"{where}.request_timeout_s: expected a whole number >= 1, got {timeout!r}")
        timeout = DEFAULT_REQUEST_TIMEOUT_S
    return KubeConnection(
        kubeconfig=str(section.get("kubeconfig", "") or ""),
        context=str(section.get("context", "") or ""),
        namespace=namespace,
        request_timeout_s=timeout,
    )


def check_pod_options(
    name: str,
    node_config: Mapping[str, Any],
    namespace: str,
    problems: list[str],
    expect: str | None = None,
) -> PodOptions | None:
    """The pod-only keys of a Kubernetes node type; appends problems, None if any.

    ``expect``: the head's ``"<ray> <python>"`` the image's tag must agree with (None: this
    process's, which is the head's or the login node's Ray environment; "": unknown here, not
    checked; the pod checks its image itself when it starts)."""
    where = f"available_node_types.{name}.node_config"
    before = len(problems)
    image = node_config.get("image")
    if not isinstance(image, str) or not IMAGE_RE.match(image):
        problems.append(f"{where}.image: required, a container image name; got {image!r}")
    else:
        expected = head_versions() if expect is None else expect
        why = image_mismatch(image, expected) if expected else None
        if why:
            problems.append(
                f"{where}.image: {image!r} cannot join this cluster: {why} "
                "(a burst pod must run the head's Ray and Python versions)"
            )
    namespace = _namespace(node_config.get("namespace", namespace), where, problems)
    selector = node_config.get("node_selector") or {}
    if not isinstance(selector, Mapping):
        problems.append(f"{where}.node_selector: expected a mapping, got {selector!r}")
        selector = {}
    for key, value in selector.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            problems.append(f"{where}.node_selector: {key!r} is not a label key")
        elif not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
            problems.append(f"{where}.node_selector.{key}: {value!r} is not a label value")
    tolerations = node_config.get("tolerations") or []
    if not isinstance(tolerations, list):
        problems.append(f"{where}.tolerations: expected a list, got {tolerations!r}")
        tolerations = []
    for i, tol in enumerate(tolerations):
        _check_toleration(f"{where}.tolerations[{i}]", tol, problems)
    account = node_config.get("service_account", "")
    if account and (not isinstance(account, str) or not DNS_LABEL_RE.match(account)):
        problems.append(f"{where}.service_account: {account!r} is not a service account name")
    host_network = node_config.get("host_network", False)
    if not isinstance(host_network, bool):
        problems.append(f"{where}.host_network: expected true or false, got {host_network!r}")
    if len(problems) > before:
        return None
    return PodOptions(
        image=str(image),
        namespace=namespace,
        node_selector={str(k): str(v) for k, v in selector.items()},
        tolerations=tuple(dict(t) for t in tolerations),
        service_account=str(account or ""),
        host_network=bool(host_network),
    )


def _check_toleration(where: str, tol: Any, problems: list[str]) -> None:
    if not isinstance(tol, Mapping):
        problems.append(f"{where}: expected a mapping, got {tol!r}")
        return
    for key in sorted(set(tol) - TOLERATION_KEYS):
        problems.append(f"{where}: unknown key {key!r}")
    operator = tol.get("operator", "Equal")
    if operator not in TOLERATION_OPERATORS:
        problems.append(f"{where}.operator: {operator!r} is not Equal or Exists")
    effect = tol.get("effect")
    if effect is not None and effect not in TAINT_EFFECTS:
        effects = ", ".join(sorted(TAINT_EFFECTS))
        problems.append(f"{where}.effect: {effect!r} is not one of {effects}")
    for key in ("key", "value"):
        if key in tol and not isinstance(tol[key], str):
            problems.append(f"{where}.{key}: expected a string, got {tol[key]!r}")


def check_label_value(value: str, where: str, problems: list[str]) -> None:
    """Cluster and node type names become pod labels when a type runs on Kubernetes."""
    if not LABEL_VALUE_RE.match(value) or len(value) > 63:
        problems.append(
            f"{where}: {value!r} cannot be a Kubernetes label value (at most 63 characters, "
            "starting and ending with a letter or digit), needed for Kubernetes node types"
        )
