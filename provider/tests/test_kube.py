"""Kubernetes node types: config checks, the pod manifest, and how a pod's status is read.

The pod status tests build the official client's own model objects (what ``list_namespaced_pod``
returns), so the parser is tested against the real types without an API server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodStatus,
)

from ray_slurm import config
from ray_slurm.backends.kube import podspec
from ray_slurm.backends.kube.backend import pod_state
from ray_slurm.backends.nodes import JobState
from ray_slurm.config import kubetypes
from ray_slurm.config.kubetypes import head_versions, image_mismatch
from ray_slurm.host import tls

RAY, PY = head_versions().split(" ")
IMAGE = f"rayproject/ray:{RAY}-py{PY.replace('.', '')}"


def add_burst(cfg, **node_config):
    cfg["available_node_types"]["burst"] = {
        "node_config": {"backend": "kubernetes", "image": IMAGE, "cpus": 2, "memory": "2G",
                        **node_config},
        "max_workers": 3,
    }  # fmt: skip


@pytest.fixture
def burst_settings(make_settings):
    return make_settings(lambda cfg: add_burst(cfg, node_selector={"pool": "burst"}))


def problems_of(make_settings, change) -> str:
    with pytest.raises(config.ConfigError) as exc:
        make_settings(change)
    return str(exc.value)


# --------------------------------------------------------------------------------------- config


def test_a_kubernetes_type_resolves(burst_settings):
    spec = burst_settings.spec("burst")
    assert spec.backend == "kubernetes"
    assert spec.pod is not None and spec.pod.image == IMAGE
    assert spec.pod.namespace == "default"
    assert spec.resources["CPU"] == 2
    assert spec.resources["memory"] + spec.object_store_bytes == 2 * 1024**3
    assert [s.name for s in burst_settings.kube_types] == ["burst"]


def test_bootstrap_gives_burst_types_a_short_idle_timeout(raw_config):
    add_burst(raw_config)
    cfg = config.bootstrap(raw_config)
    assert cfg["available_node_types"]["burst"]["idle_timeout_s"] == 60
    assert "idle_timeout_s" not in cfg["available_node_types"]["cpu"]


def test_namespace_from_the_provider_section_and_per_type(make_settings):
    def change(cfg):
        cfg["provider"]["kubernetes"] = {"namespace": "ray-burst", "kubeconfig": "~/k.yaml"}
        add_burst(cfg)
        cfg["available_node_types"]["other"] = {
            "node_config": {"backend": "kubernetes", "image": IMAGE, "cpus": 1, "memory": "1G",
                            "namespace": "team-a"},
        }  # fmt: skip

    settings = make_settings(change)
    assert settings.spec("burst").pod.namespace == "ray-burst"
    assert settings.spec("other").pod.namespace == "team-a"
    assert settings.kube.kubeconfig == "~/k.yaml"


def test_a_namespace_per_user(make_settings, monkeypatch):
    """`ray-{user}`: one site config, a namespace of each user's own (login name as a label)."""
    monkeypatch.setattr(kubetypes, "user_name", lambda: "J.Doe_2")

    def change(cfg):
        cfg["provider"]["kubernetes"] = {"namespace": "ray-{user}"}
        add_burst(cfg)

    settings = make_settings(change)
    assert settings.kube.namespace == "ray-j-doe-2"
    assert settings.spec("burst").pod.namespace == "ray-j-doe-2"
    assert kubetypes.resolve_namespace("team-a") == "team-a"


@pytest.mark.parametrize(
    ("node_config", "expected"),
    [
        ({"image": "rayproject/ray:2.9.0-py310"}, "its tag says Ray 2.9.0, the head runs Ray"),
        ({"image": f"rayproject/ray:{RAY}-py39"}, "its tag says Python 3.9"),
        ({"image": "bad image"}, "node_config.image: required"),
        ({"namespace": "Team_A"}, "'Team_A' is not a Kubernetes namespace name"),
        ({"node_selector": {"pool": "a b"}}, "node_selector.pool: 'a b' is not a label value"),
        ({"node_selector": ["pool"]}, "node_selector: expected a mapping"),
        ({"tolerations": [{"key": "x", "operator": "Maybe"}]}, "'Maybe' is not Equal or Exists"),
        ({"tolerations": [{"key": "x", "effect": "Never"}]}, "effect: 'Never' is not one of"),
        ({"tolerations": [{"key": "x", "colour": "red"}]}, "unknown key 'colour'"),
        ({"service_account": "Bad Account"}, "is not a service account name"),
        ({"host_network": "yes"}, "host_network: expected true or false, got 'yes'"),
        ({"partition": "debug"}, "node_config: unknown key 'partition'"),
        ({"memory": None}, "memory: expected a size"),
        ({"backend": "cloud"}, "backend: 'cloud' is not one of slurm, kubernetes"),
    ],
)
def test_bad_kubernetes_types_are_refused_by_name(make_settings, node_config, expected):
    message = problems_of(make_settings, lambda cfg: add_burst(cfg, **node_config))
    assert "available_node_types.burst" in message
    assert expected in message


def test_the_head_cannot_be_a_pod(make_settings):
    def change(cfg):
        cfg["available_node_types"]["head"]["node_config"]["backend"] = "kubernetes"

    assert "the head cannot run on kubernetes" in problems_of(make_settings, change)


def test_cluster_name_must_be_a_label_value_when_pods_are_used(make_settings):
    def change(cfg):
        cfg["cluster_name"] = "ends-with-dash-"
        add_burst(cfg)

    assert "cluster_name: 'ends-with-dash-' cannot be a Kubernetes label value" in problems_of(
        make_settings, change
    )


def test_provider_kubernetes_section_is_checked(make_settings):
    def change(cfg):
        cfg["provider"]["kubernetes"] = {"namespace": "x_y", "request_timeout_s": 0, "bogus": 1}
        add_burst(cfg)

    message = problems_of(make_settings, change)
    assert "provider.kubernetes: unknown key 'bogus'" in message
    assert "provider.kubernetes.namespace: 'x_y'" in message
    assert "provider.kubernetes.request_timeout_s: expected a whole number >= 1, got 0" in message


@pytest.mark.parametrize(
    ("image", "mismatch"),
    [
        ("rayproject/ray:2.60.0", None),
        ("rayproject/ray:2.60.0-py312-cpu", None),
        ("registry:5000/ray:2.60.0-py312", None),  # the port is not a tag
        ("registry:5000/ray", None),
        ("myorg/worker:latest", None),  # says nothing: the pod's own check decides
        ("rayproject/ray@sha256:abcd", None),
        ("rayproject/ray:2.59.1", "its tag says Ray 2.59.1, the head runs Ray 2.60.0"),
        ("rayproject/ray:2.60.0-py311", "its tag says Python 3.11, the head runs Python 3.12"),
    ],
)
def test_image_tags_that_state_versions(image, mismatch):
    assert image_mismatch(image, "2.60.0 3.12") == mismatch


# ------------------------------------------------------------------------------------ pod spec


def manifest(spec, **kw):
    args = {"name": "ray-example-burst-abc123", "user": "alice", "cluster_name": "example",
            "head_address": "10.77.0.1:6379", "token_secret": "ray-example-token-x",
            "expect_versions": "2.60.0 3.12", **kw}  # fmt: skip
    return podspec.pod_manifest(spec, **args)


def env_of(pod):
    return {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}


def test_pod_manifest(burst_settings):
    spec = burst_settings.spec("burst")
    pod = manifest(spec)
    meta, pod_spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "ray-example-burst-abc123"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "rayhpc-slurm",
        "rayhpc.io/cluster": "example",
        "rayhpc.io/user": "alice",
        "rayhpc.io/node-type": "burst",
        "rayhpc.io/node-kind": "worker",
    }
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["nodeSelector"] == {"pool": "burst"}
    assert pod_spec["automountServiceAccountToken"] is False  # no API access without a reason
    (container,) = pod_spec["containers"]
    assert container["image"] == IMAGE
    assert container["command"][:2] == ["sh", "-c"]
    assert 'exec ray start "$@"' in container["command"][2]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "2048Mi"}
    assert container["resources"]["limits"] == container["resources"]["requests"]
    args = container["args"]
    assert args[:2] == ["--address=10.77.0.1:6379", "--node-ip-address=$(POD_IP)"]
    assert "--num-cpus=2" in args and "--block" in args
    assert f"--memory={int(spec.resources['memory'])}" in args
    assert f"--object-store-memory={spec.object_store_bytes}" in args
    env = env_of(pod)
    assert env["RAY_CLOUD_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["RAY_NODE_TYPE_NAME"]["value"] == "burst"
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "ray-example-token-x", "key": "token"}  # fmt: skip
    assert "value" not in env["RAY_AUTH_TOKEN"]  # the token itself never is in the pod spec
    assert env["RAY_enable_metrics_collection"]["value"] == "0"  # no port open to anyone
    assert "RAY_enable_metrics_collection" not in env_of(manifest(spec, metrics_export=True))


def test_pod_manifest_gpus_tolerations_account(make_settings):
    tol = {"key": "dedicated", "operator": "Equal", "value": "ray", "effect": "NoSchedule"}
    settings = make_settings(lambda cfg: add_burst(cfg, gpus=1, tolerations=[tol],
                                                   service_account="ray-burst"))  # fmt: skip
    pod = manifest(settings.spec("burst"))
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--num-gpus=1" in pod["spec"]["containers"][0]["args"]
    assert pod["spec"]["tolerations"] == [tol]
    assert pod["spec"]["serviceAccountName"] == "ray-burst"
    assert pod["spec"]["automountServiceAccountToken"] is True
    assert "hostNetwork" not in pod["spec"]


def test_pod_manifest_host_network(make_settings):
    settings = make_settings(lambda cfg: add_burst(cfg, host_network=True))
    pod = manifest(settings.spec("burst"))
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_pod_and_secret_names():
    name = podspec.pod_name("My_Cluster", "GPU_big")
    assert (
        name.startswith("ray-my-cluster-gpu-big-")
        and len(name) == len("ray-my-cluster-gpu-big-") + 6
    )
    assert podspec.pod_name("c", "t") != podspec.pod_name("c", "t")
    long = podspec.pod_name("c" * 64, "t" * 64)
    assert len(long) <= 63 and long[0].isalnum() and "--" not in long
    # one Secret per user and cluster: two users' clusters of the same name never share one
    assert podspec.secret_name("alice", "ray") != podspec.secret_name("bob", "ray")
    assert podspec.secret_name("alice", "ray") == podspec.secret_name("alice", "ray")
    assert podspec.label_value("first.last@EXAMPLE.ORG") == "first.last_EXAMPLE.ORG"


def run_start_script(
    tmp_path, python_body: str, expect: str, ca: str | None = None
) -> subprocess.CompletedProcess:
    """The pod's command with the version check's `python` and `ray` replaced: what the image
    check decides. The TLS program is the real one, run by this Python, with a real CA."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        f'#!/bin/sh\n[ "$2" = "$RAY_SLURM_TLS_PROGRAM" ] && exec {sys.executable} "$@"\n'
        f"{python_body}\n"
    )
    (bin_dir / "ray").write_text(
        '#!/bin/sh\necho "TLS=$RAY_USE_TLS $RAY_TLS_SERVER_CERT $RAY_TLS_CA_CERT '
        '${RAY_SLURM_TLS_CA:-no-ca-left}"\necho "ray $*"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    tls.new_ca(tmp_path / "ca.pem", "example")
    (tmp_path / "t").mkdir()
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "RAY_SLURM_IMAGE": "img:1",
        "POD_IP": "10.0.0.5",
        "RAY_SLURM_EXPECT": expect,
        "RAY_CLOUD_INSTANCE_ID": "pod-1",
        "TMPDIR": str(tmp_path / "t"),
        tls.CA_ENV: (tmp_path / "ca.pem").read_text() if ca is None else ca,
        "RAY_SLURM_TLS_PROGRAM": podspec.TLS_PROGRAM,
    }
    argv = ["sh", "-c", podspec.START_SCRIPT, "ray-burst", "--address=h:1", "--block"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)


def test_start_script_execs_ray_when_versions_match(tmp_path):
    proc = run_start_script(tmp_path, "echo 2.60.0 3.12", "2.60.0 3.12")
    assert proc.returncode == 0, proc.stderr
    t = tmp_path / "t"
    assert proc.stdout.splitlines()[-1] == f"ray start --address=h:1 --block --temp-dir={t}/ray"
    # its own certificate for its address, from the Secret's CA (which Ray is not handed)
    tls_dir = t / "ray-slurm-tls"
    assert proc.stdout.splitlines()[-2] == f"TLS=1 {tls_dir}/tls.crt {tls_dir}/ca.crt no-ca-left"
    cert = x509.load_pem_x509_certificate((tls_dir / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.5") in sans.get_values_for_type(x509.IPAddress)
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700


def test_start_script_without_a_usable_ca_stops_before_ray(tmp_path):
    proc = run_start_script(tmp_path, "echo 2.60.0 3.12", "2.60.0 3.12", ca="not a CA")
    assert proc.returncode == podspec.IMAGE_CHECK_FAILED
    assert "cannot make this node's TLS certificate" in proc.stderr
    assert "ray start" not in proc.stdout


def test_start_script_refuses_other_versions(tmp_path):
    proc = run_start_script(tmp_path, "echo 2.9.0 3.10", "2.60.0 3.12")
    assert proc.returncode == podspec.IMAGE_MISMATCH
    assert "image img:1 has Ray/Python 2.9.0 3.10, the head runs 2.60.0 3.12" in proc.stderr
    assert "ray start" not in proc.stdout


def test_start_script_reports_an_image_without_ray(tmp_path):
    body = (
        'echo "Traceback..." >&2; echo "ModuleNotFoundError: No module named \'ray\'" >&2; exit 1'
    )
    proc = run_start_script(tmp_path, body, "2.60.0 3.12")
    assert proc.returncode == podspec.IMAGE_CHECK_FAILED
    assert proc.stderr.strip() == (
        "ray-slurm: image img:1 cannot run Ray: ModuleNotFoundError: No module named 'ray'"
    )


def test_start_script_check_is_real_python():
    """The check's Python one-liner prints what the head's versions look like."""
    line = podspec.START_SCRIPT.split("python -c '", 1)[1].split("' 2>&1", 1)[0]  # the first
    out = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == head_versions()


# ---------------------------------------------------------------------------------- pod status

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def pod(phase, *, waiting=None, terminated=None, conditions=None, deleting=False):
    state = None
    if waiting:
        state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting[0],
                                                                 message=waiting[1]))  # fmt: skip
    elif terminated:
        state = V1ContainerState(terminated=V1ContainerStateTerminated(
            exit_code=terminated[0], reason=terminated[1], message=terminated[2],
            started_at=T0, finished_at=T0 + dt.timedelta(seconds=5)))  # fmt: skip
    elif phase == "Running":
        state = V1ContainerState(running=V1ContainerStateRunning(started_at=T0))
    statuses = [V1ContainerStatus(name="ray-worker", image="i", image_id="", ready=True,
                                  restart_count=0, state=state)] if state else None  # fmt: skip
    return V1Pod(
        metadata=V1ObjectMeta(name="p", deletion_timestamp=T0 if deleting else None),
        status=V1PodStatus(phase=phase, container_statuses=statuses, conditions=conditions),
    )


@pytest.mark.parametrize(
    ("the_pod", "expected"),
    [
        (pod("Running"), (JobState.RUNNING, "")),
        (pod("Running", deleting=True), (JobState.STOPPING, "being deleted")),
        (pod("Pending"), (JobState.PENDING, "waiting to be scheduled")),
        (pod("Pending", waiting=("ImagePullBackOff", 'Back-off pulling image "x"')),
         (JobState.PENDING, 'ImagePullBackOff: Back-off pulling image "x"')),
        (pod("Pending", waiting=("ContainerCreating", None)),
         (JobState.PENDING, "ContainerCreating")),
        (pod("Pending", conditions=[V1PodCondition(
            type="PodScheduled", status="False", reason="Unschedulable",
            message="0/2 nodes are available: 2 Insufficient cpu.")]),
         (JobState.PENDING, "Unschedulable: 0/2 nodes are available: 2 Insufficient cpu.")),
        (pod("Failed", terminated=(91, "Error", "ray-slurm: image x has Ray/Python 2.9.0 3.10\n")),
         (JobState.GONE, "exit code 91 (Error): ray-slurm: image x has Ray/Python 2.9.0 3.10")),
        (pod("Succeeded", terminated=(0, "Completed", None)),
         (JobState.GONE, "exit code 0 (Completed)")),
        (pod("Failed"), (JobState.GONE, "Failed")),
    ],
)  # fmt: skip
def test_pod_state(the_pod, expected):
    assert pod_state(the_pod) == expected
