"""The one pod manifest of a burst worker, and the names and labels that find it again.

A burst pod is what a SLURM worker job is, as a pod: it checks that its image runs the head's
Ray and Python, makes its own TLS certificate, then ``exec ray start --address=<head> --block``
as ``nodestart`` says (the job script's own description) with ``RAY_CLOUD_INSTANCE_ID`` = its own
name. The token and the TLS CA come from the cluster's Secret; the command is a fixed script
and every value reaches it as an argument or environment variable, never as shell text.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Any

from ray_slurm.backends.nodestart import ray_start
from ray_slurm.config import NodeTypeSpec
from ray_slurm.host import tls

MANAGED_BY = "rayhpc-slurm"
LABEL_CLUSTER = "rayhpc.io/cluster"
LABEL_USER = "rayhpc.io/user"
LABEL_NODE_TYPE = "rayhpc.io/node-type"
LABEL_KIND = "rayhpc.io/node-kind"
TOKEN_KEY = "token"  # noqa: S105 - the key in the Secret, not a password
TLS_CA_KEY = "tls-ca"  # the cluster's TLS CA (key and certificate), for the pod's certificate
GRACE_PERIOD_S = 45  # Ray drains for up to 30 s after SIGTERM
IMAGE_CHECK_FAILED = 90  # exit codes of the image check: the provider reports them as such
IMAGE_MISMATCH = 91

# Runs as `sh -c SCRIPT ray-burst <ray start arguments>`: no value is ever part of the text.
START_SCRIPT = """\
v=$(python -c 'import sys, ray; print(ray.__version__, "%d.%d" % sys.version_info[:2])' 2>&1) || {
    echo "ray-slurm: image $RAY_SLURM_IMAGE cannot run Ray: $(printf '%s' "$v" | tail -n 1)" >&2
    exit 90
}
if [ "$v" != "$RAY_SLURM_EXPECT" ]; then
    echo "ray-slurm: image $RAY_SLURM_IMAGE has Ray/Python $v, the head runs $RAY_SLURM_EXPECT" >&2
    exit 91
fi
# TLS, as on every node of the cluster: this pod's own certificate for its address, issued by
# ray_slurm's tls module (its source is in RAY_SLURM_TLS_PROGRAM: the image needs only Ray).
tls_dir="${TMPDIR:-/tmp}/ray-slurm-tls"
mkdir -m 700 "$tls_dir" && python -c "$RAY_SLURM_TLS_PROGRAM" --out "$tls_dir" --ip "$POD_IP" || {
    echo "ray-slurm: image $RAY_SLURM_IMAGE cannot make the node's TLS certificate" >&2
    exit 90
}
unset RAY_SLURM_TLS_CA RAY_SLURM_TLS_PROGRAM
export RAY_USE_TLS=1 RAY_TLS_SERVER_CERT="$tls_dir/tls.crt" RAY_TLS_SERVER_KEY="$tls_dir/tls.key"
export RAY_TLS_CA_CERT="$tls_dir/ca.crt"
echo "ray-slurm: starting burst worker $RAY_CLOUD_INSTANCE_ID ($POD_IP)"
exec ray start "$@" --temp-dir="${TMPDIR:-/tmp}/ray"
"""


# The source of ray_slurm.host.tls, which a pod runs with `python -c` (see START_SCRIPT).
TLS_PROGRAM = Path(tls.__file__).read_text()


def _dns(text: str) -> str:
    """Lowercase letters, digits and dashes only (RFC 1123), no dash at either end."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def pod_name(cluster_name: str, node_type: str) -> str:
    """``ray-<cluster>-<type>-<random>``, at most 63 characters (it is also the hostname)."""
    suffix = secrets.token_hex(3)
    prefix = _dns(f"ray-{cluster_name}-{node_type}")[: 63 - len(suffix) - 1].rstrip("-")
    return f"{prefix}-{suffix}"


def secret_name(user: str, cluster_name: str) -> str:
    """One token Secret per user and cluster: users sharing a namespace never collide."""
    digest = hashlib.sha256(f"{user}/{cluster_name}".encode()).hexdigest()[:10]
    return f"{_dns(f'ray-{cluster_name}')[:40].rstrip('-')}-token-{digest}"


def label_value(text: str) -> str:
    """A valid label value for ``text`` (user names may hold characters labels cannot)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value) or "unknown"


def cluster_labels(user: str, cluster_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_CLUSTER: cluster_name,
        LABEL_USER: label_value(user),
    }


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def ray_start_args(spec: NodeTypeSpec, head_address: str) -> list[str]:
    """``ray start`` arguments: the head's address, the pod's own IP, then ``nodestart``'s."""
    return [
        f"--address={head_address}",
        "--node-ip-address=$(POD_IP)",  # expanded by Kubernetes from the pod's own IP
        *ray_start(spec).args,  # (the arguments do not depend on the provider's settings)
        "--block",
    ]


def pod_manifest(
    spec: NodeTypeSpec,
    *,
    name: str,
    user: str,
    cluster_name: str,
    head_address: str,
    token_secret: str,
    expect_versions: str,
    metrics_export: bool = False,
) -> dict[str, Any]:
    """The pod for one node of ``spec`` (a Kubernetes worker type)."""
    assert spec.pod is not None, f"node type {spec.name} is not a Kubernetes type"
    labels = {**cluster_labels(user, cluster_name), LABEL_NODE_TYPE: spec.name,
              LABEL_KIND: spec.kind}  # fmt: skip
    memory = f"{spec.memory_mb}Mi"
    limits: dict[str, str] = {"cpu": str(spec.cpus), "memory": memory}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "RAY_CLOUD_INSTANCE_ID",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": key, "value": value}
          for key, value in ray_start(spec, metrics_export=metrics_export).env.items()),
        {"name": "RAY_AUTH_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": token_secret, "key": TOKEN_KEY}}},
        {"name": tls.CA_ENV,
         "valueFrom": {"secretKeyRef": {"name": token_secret, "key": TLS_CA_KEY}}},
        {"name": "RAY_SLURM_TLS_PROGRAM", "value": TLS_PROGRAM},
        {"name": "RAY_SLURM_IMAGE", "value": spec.pod.image},
        {"name": "RAY_SLURM_EXPECT", "value": expect_versions},
    ]  # fmt: skip
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # a Ray node that ended is gone: Ray starts a new one
        "terminationGracePeriodSeconds": GRACE_PERIOD_S,
        "automountServiceAccountToken": bool(spec.pod.service_account),
        "containers": [
            {
                "name": "ray-worker",
                "image": spec.pod.image,
                "command": ["sh", "-c", START_SCRIPT, "ray-burst"],
                "args": ray_start_args(spec, head_address),
                "env": env,
                "resources": {"requests": dict(limits), "limits": limits},
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
    }
    if spec.pod.node_selector:
        pod_spec["nodeSelector"] = dict(spec.pod.node_selector)
    if spec.pod.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.pod.tolerations]
    if spec.pod.service_account:
        pod_spec["serviceAccountName"] = spec.pod.service_account
    if spec.pod.host_network:  # Ray's ports are then the node's: one burst pod per node
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": spec.pod.namespace, "labels": labels},
        "spec": pod_spec,
    }


def secret_data(token: str, ca_pem: bytes) -> dict[str, str]:
    """What the cluster's Secret holds: the token, and the CA each pod issues its certificate
    with (both change at every head launch)."""
    return {TOKEN_KEY: token, TLS_CA_KEY: ca_pem.decode()}


def secret_manifest(
    name: str, namespace: str, labels: dict[str, str], data: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "stringData": data,
    }
