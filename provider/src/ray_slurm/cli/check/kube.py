"""``ray-slurm check`` for Kubernetes node types: API, permissions, and the pod network.

Always (read-only): the client config loads, the API server answers, and in every namespace the
burst types use this identity may list pods and secrets (what the provider does every tick).

With ``--probe-pods`` (creates one short-lived pod per namespace): the assumption bursting rests
on — pods reach this host and this host reaches pods — tested for real. The probe pod, from the
first burst type's image and scheduling hints, connects to a TCP listener opened here, sends the
port it listens on, and this host connects back to the pod's IP. A head in a SLURM job runs on a
compute node, not here: there the probe tests the login node's side only (said in the output).
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

from ray_slurm.backends.kube import podspec
from ray_slurm.backends.kube.backend import KubeError, KubernetesBackend, pod_state
from ray_slurm.backends.nodes import JobState
from ray_slurm.cli.check.report import Report
from ray_slurm.config import Settings
from ray_slurm.host.state import ClusterDir

PROBE_TIMEOUT_S = 90
RBAC_FIX = "apply the site's kubernetes-rbac.yaml (Role: pods, pods/log, secrets, services)"

# Runs as `sh -c SCRIPT probe <head ip> <head port>` in the probe pod.
PROBE_SCRIPT = """\
exec python -c '
import socket, sys
listener = socket.socket()
listener.bind(("", 0))
listener.listen(1)
listener.settimeout(60)
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as s:
    s.sendall(str(listener.getsockname()[1]).encode())
conn, _ = listener.accept()
conn.sendall(b"ok")
conn.close()
print("probe: both directions work")
' "$@"
"""


def check_kubernetes(settings: Settings, report: Report, head_ip: str, probe: bool) -> None:
    """Append problems (with fixes) and passed checks for the config's Kubernetes types."""
    if not settings.kube_types:
        return
    cluster = ClusterDir(settings.state_dir, settings.cluster_name)
    backend = KubernetesBackend(settings, cluster)
    try:
        api = backend.api
        from kubernetes import client

        version = backend.call("asking the API server its version",
                                client.VersionApi(api.api_client).get_code)  # fmt: skip
    except KubeError as exc:
        report.add(f"Kubernetes: {exc}", "check provider.kubernetes (kubeconfig, context) and "
                   "that the API server is reachable from this host")  # fmt: skip
        return
    report.passed.append(f"Kubernetes API {version.git_version}")
    allowed = []
    for namespace in backend.namespaces:
        ok = True
        for what, fn in (
            ("pods", api.list_namespaced_pod),
            ("secrets", api.list_namespaced_secret),
        ):
            try:
                backend.call(f"listing {what} in namespace {namespace}", fn, namespace,
                              label_selector=podspec.selector(backend.labels))  # fmt: skip
            except KubeError as exc:
                report.add(str(exc), RBAC_FIX)
                ok = False
        if ok:
            allowed.append(namespace)
            report.passed.append(f"namespace {namespace} (list pods, secrets)")
    if probe:
        for namespace in allowed:
            spec = next(s for s in settings.kube_types if s.pod and s.pod.namespace == namespace)
            _probe(backend, spec, head_ip, settings.head_mode, report)


def _probe(backend: KubernetesBackend, spec: Any, head_ip: str, head_mode: str,
           report: Report) -> None:  # fmt: skip
    """One pod in ``spec``'s namespace: pod -> this host, then this host -> pod."""
    namespace = spec.pod.namespace
    name = podspec.pod_name(backend.settings.cluster_name, "probe")
    with socket.socket() as listener:
        listener.bind((head_ip, 0))
        listener.listen(1)
        listener.settimeout(PROBE_TIMEOUT_S)
        pod = backend.pod(spec, head_address="")
        pod["metadata"]["name"] = name
        container = pod["spec"]["containers"][0]
        container.update(command=["sh", "-c", PROBE_SCRIPT, "probe"],
                         args=[head_ip, str(listener.getsockname()[1])], env=[])  # fmt: skip
        pod["metadata"]["labels"][podspec.LABEL_KIND] = "probe"
        where = f"probe pod {name} in namespace {namespace}"
        try:
            backend.call(f"creating {where}", backend.api.create_namespaced_pod, namespace, pod)
        except KubeError as exc:
            report.add(str(exc), RBAC_FIX)
            return
        try:
            problem = _run_probe(backend, listener, name, namespace)
        finally:
            with contextlib.suppress(KubeError):
                backend.call(f"deleting {where}", backend.api.delete_namespaced_pod, name,
                              namespace, grace_period_seconds=0)  # fmt: skip
    if problem:
        report.add(f"{where}: {problem}", "pods must reach the head's host on any TCP port and "
                   "be reachable at their pod IP from it: a routable pod network or "
                   "hostNetwork pods (docs/admin-guide.md, 'Bursting to Kubernetes')")  # fmt: skip
        return
    side = "" if head_mode == "login" else " (from the login node; the head job's node untested)"
    report.passed.append(f"pod network in {namespace}: pod -> {head_ip} and back{side}")


def _run_probe(backend: KubernetesBackend, listener: socket.socket, name: str,
               namespace: str) -> str | None:  # fmt: skip
    """None if both directions worked, else what failed."""
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while True:  # first the pod must run
        pod = backend.call("reading the probe pod", backend.api.read_namespaced_pod, name,
                            namespace)  # fmt: skip
        state, reason = pod_state(pod)
        if state is JobState.GONE:
            return f"ended before it connected: {reason}"
        if state is JobState.RUNNING:
            break
        if time.monotonic() > deadline:
            return f"did not start within {PROBE_TIMEOUT_S} s ({reason})"
        time.sleep(1)
    try:
        conn, _ = listener.accept()
    except OSError:
        return f"the pod did not reach {listener.getsockname()[0]} ({reason or 'no connection'})"
    with conn:
        port = int(conn.recv(16).decode() or 0)
    pod_ip = pod.status.pod_ip or ""
    try:
        with socket.create_connection((pod_ip, port), timeout=10) as s:
            if s.recv(2) == b"ok":
                return None
    except OSError as exc:
        return f"reached this host, but this host cannot reach the pod at {pod_ip}:{port} ({exc})"
    return f"no answer from the pod at {pod_ip}:{port}"
