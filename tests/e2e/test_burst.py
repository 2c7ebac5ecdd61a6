"""Issue #6: bursting onto Kubernetes when SLURM cannot deliver, against the in-repo API stand-in.

What is real here: SLURM (a partition set DOWN), Ray 2.60 (`ray up`, the autoscaler v2, a
driver, run by a user with the site's Ray environment), the official `kubernetes` client, and the
burst pods' processes (`ray start` in their own network namespace, a "cloud host"). What is the
stand-in: the API server and its scheduler (tests/fixtures/kube_standin/,
docs/kubernetes-standin.md). The tests that drive a provider object directly run in the
harness's own environment, as root.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ALICE, parse_result, scontrol, site_ray_env, start_driver, wait_for
from kubernetes import client, config

from ray_slurm import SlurmNodeProvider
from ray_slurm.cluster.policy import LaunchRefused
from ray_slurm.config import bootstrap
from ray_slurm.config.kubetypes import head_versions

REPO = Path(__file__).resolve().parents[2]
PORT = 16446  # not the default 16443: a stand-in started by hand is left alone
PREFIX, IP_BASE = "rsl-kb", 150  # cloud hosts rsl-kb1.. at 10.77.0.151..
RAY, PY = head_versions().split(" ")
IMAGE = f"rayproject/ray:{RAY}-py{PY.replace('.', '')}"  # the harness's Ray and Python
# The site's Ray environment, whose head a user's `ray up` starts: its own Python version.
SITE_PY = subprocess.check_output([str(site_ray_env() / "bin" / "python"), "-c",
                                   "import sys; print(*sys.version_info[:2], sep='')"],
                                  text=True).strip()  # fmt: skip
SITE_IMAGE = f"rayproject/ray:{RAY}-py{SITE_PY}"
USER_NAMESPACE = f"ray-{ALICE.name}"  # what `ray-{user}` is for her
NO_RAY_IMAGE = "example.org/python-without-ray:1"  # runs, but has no Ray: the pod's check fails
MISSING_IMAGE = "example.org/ray-worker:missing"  # cannot be pulled


@dataclass
class Standin:
    kubeconfig: Path
    v1: client.CoreV1Api


def launcher(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "scripts" / "kube-standin"), *args, "--state-dir",
                           str(state), "--port", str(PORT)], capture_output=True, text=True,
                          timeout=90, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    state = tmp_path_factory.mktemp("kube")
    no_ray_env = tmp_path_factory.mktemp("noray") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(no_ray_env)], check=True)
    up = launcher("up", "--hosts", "2", "--host-prefix", PREFIX, "--ip-base", str(IP_BASE),
                  "--start-delay", "0.5", "--namespace", "default", "--namespace", "tight",
                  "--namespace", USER_NAMESPACE,
                  "--image", f"{SITE_IMAGE}*={site_ray_env()}",
                  "--image", f"rayproject/ray:{RAY}*={sys.prefix}",
                  "--image", f"{NO_RAY_IMAGE}={no_ray_env}", state=state)  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    # the user's own copy of the credentials (the stand-in's state is the harness's)
    kubeconfig = ALICE.write(ALICE.mkdir(ALICE.home / "e2e-kube") / "kubeconfig",
                             (state / "kubeconfig").read_text(), 0o600)  # fmt: skip
    v1 = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    v1.create_namespaced_resource_quota("tight", {
        "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})  # fmt: skip
    yield Standin(kubeconfig, v1)
    down = launcher("down", state=state)
    assert down.returncode == 0, down.stdout + down.stderr


def leftovers(v1: client.CoreV1Api, cluster_name: str) -> list[str]:
    """Every pod, secret and service of the cluster, in any namespace."""
    sel = f"rayhpc.io/cluster={cluster_name}"
    found = []
    for kind, fn in (("pod", v1.list_pod_for_all_namespaces),):
        found += [f"{kind}/{o.metadata.name}" for o in fn(label_selector=sel).items]
    for namespace in ("default", "tight", USER_NAMESPACE):
        for kind, fn in (("secret", v1.list_namespaced_secret),
                         ("service", v1.list_namespaced_service)):  # fmt: skip
            found += [f"{kind}/{o.metadata.name}" for o in fn(namespace, label_selector=sel).items]
    return found


def burst_type(image: str = IMAGE, **node_config):
    return {"node_config": {"backend": "kubernetes", "image": image, "cpus": 2,
                            "memory": "1500M", **node_config},
            "max_workers": 2, "idle_timeout_s": 20}  # fmt: skip


@pytest.fixture
def long_partition_down():
    scontrol("update", "PartitionName=long", "State=DOWN")
    yield
    scontrol("update", "PartitionName=long", "State=UP")


def test_demand_bursts_to_pods_when_slurm_cannot_deliver(make_cluster, standin,
                                                         long_partition_down):  # fmt: skip
    def change(cfg):
        # a namespace per user, as the site role renders it by default
        cfg["provider"]["kubernetes"] = {"kubeconfig": str(standin.kubeconfig),
                                         "namespace": "ray-{user}"}  # fmt: skip
        cpu = cfg["available_node_types"]["cpu"]["node_config"]
        cpu["partition"] = "long"  # DOWN: jobs stay pending (PartitionDown)
        cpu["pending_timeout_s"] = 20
        cfg["available_node_types"]["burst"] = burst_type(SITE_IMAGE)

    # Room for both tasks in SLURM (2 workers): pods only once SLURM has failed to deliver.
    cluster = make_cluster("b-burst", max_workers=2, change=change)
    cluster.up()
    driver = start_driver(cluster, tasks=2, seconds=3)
    try:
        # SLURM first: jobs are submitted and, while they wait, no pod is created.
        jobs = wait_for(lambda: len(cluster.jobs("worker")) == 2 and cluster.jobs("worker"), 60,
                        "two SLURM worker jobs")  # fmt: skip
        assert {j.slurm_state for j in jobs} == {"PENDING"}
        time.sleep(10)
        assert leftovers(standin.v1, cluster.name) == []
        # After their pending timeout the jobs are cancelled and the demand goes to pods.
        out, err = driver.communicate(timeout=240)
        assert driver.returncode == 0, out + err
    finally:
        driver.kill()
    # The pods (and below, the Secret) are in her namespace only (before they go idle).
    label = f"rayhpc.io/cluster={cluster.name}"
    pods = standin.v1.list_pod_for_all_namespaces(label_selector=label).items
    assert pods and {p.metadata.namespace for p in pods} == {USER_NAMESPACE}, pods
    # `ray-slurm status` lists the pods with their IPs (before they go idle)
    status = cluster.status()
    assert "ray-b-burst-burst-" in status and f"10.77.0.{IP_BASE + 1}" in status, status
    where = parse_result(out)
    hosts = {host for host, _ in where}
    assert all(h.startswith("ray-b-burst-burst-") for h in hosts), where  # pod names
    assert {ip for _, ip in where} <= {f"10.77.0.{IP_BASE + i}" for i in (1, 2)}, where
    assert not {j.job_id for j in jobs} & {j.job_id for j in cluster.jobs()}
    log = cluster.autoscaler_log()
    assert f"node type cpu unavailable: job {jobs[0].job_id} waited" in log
    assert "node types held at their current size: burst=0" in log  # SLURM first
    assert "launched kubernetes node ray-b-burst-burst-" in log
    # The token reached the pods as a Secret, never in the pod spec.
    secrets = [s for s in leftovers(standin.v1, cluster.name) if s.startswith("secret/")]
    assert len(secrets) == 1
    assert standin.v1.list_namespaced_secret(USER_NAMESPACE, label_selector=label).items

    # Idle pods go (idle_timeout_s 20 s), before ray down.
    wait_for(lambda: not [p for p in leftovers(standin.v1, cluster.name) if p.startswith("pod/")],
             120, "the idle burst pods to be deleted")  # fmt: skip
    cluster.down()
    assert leftovers(standin.v1, cluster.name) == []
    assert cluster.jobs() == []


@pytest.fixture
def provider(standin, tmp_path):
    """A provider as the head's autoscaler has it, with a head address but no head."""

    made: list[SlurmNodeProvider] = []

    def make(name: str, kubeconfig: Path | None = None, pending_timeout_s: int = 8,
             **node_config) -> SlurmNodeProvider:  # fmt: skip
        cfg = {
            "cluster_name": name,
            "provider": {"type": "external", "module": "ray_slurm.SlurmNodeProvider",
                         "disable_node_updaters": True, "state_dir": str(tmp_path / "state"),
                         "kubernetes": {"kubeconfig": str(kubeconfig or standin.kubeconfig)}},
            "head_node_type": "head",
            "available_node_types": {
                "head": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                "burst": burst_type(pending_timeout_s=pending_timeout_s, **node_config),
            },
        }  # fmt: skip
        bootstrap(cfg)
        provider = SlurmNodeProvider(cfg["provider"], name)
        provider.cluster.new_secrets()  # the token and TLS CA a launched head would have made
        provider.cluster.publish_head({"ip": "10.77.0.1", "gcs_port": 1})
        if kubeconfig is None:
            made.append(provider)  # removes what it made at the end
        return provider

    yield make
    for p in made:
        p.cleanup_cluster_resources()


def launch(provider: SlurmNodeProvider, count: int = 1) -> None:
    tags = {"ray-node-kind": "worker", "ray-user-node-type": "burst"}
    provider.create_node_with_resources_and_labels({}, tags, count, {}, {})


def wait_reason(provider: SlurmNodeProvider, text: str, timeout: float = 30) -> str:
    def reason():
        nodes = [provider.node_info(i) for i in provider.non_terminated_nodes({})]
        return next((n.reason for n in nodes if n and text in n.reason), None)

    return wait_for(reason, timeout, f"a pod pending with {text!r}", interval=1)


def assert_removed_and_backed_off(provider, standin, name: str, why: str) -> None:
    wait_for(lambda: not provider.non_terminated_nodes({}), 40, "the pod to be removed", 1)
    assert leftovers(standin.v1, name) == [f"secret/{provider.backends['kubernetes'].secret}"]
    backed_off = provider.backoff.backed_off()
    assert why in backed_off.get("burst", ""), backed_off
    with pytest.raises(LaunchRefused, match="backed off"):
        launch(provider)


def test_a_pod_whose_image_cannot_be_pulled_is_removed_with_the_reason(provider, standin):
    p = provider("b-pull", image=MISSING_IMAGE)
    launch(p, count=2)
    assert len(p.non_terminated_nodes({"ray-user-node-type": "burst"})) == 2
    assert "ImagePullBackOff" in wait_reason(p, "ImagePullBackOff")
    assert_removed_and_backed_off(p, standin, "b-pull", "ImagePullBackOff")


def test_an_unschedulable_pod_is_removed_with_the_reason(provider, standin):
    p = provider("b-nofit", node_selector={"pool": "gpu"})
    launch(p)
    reason = wait_reason(p, "Unschedulable")
    assert "didn't match Pod's node affinity/selector" in reason
    assert_removed_and_backed_off(p, standin, "b-nofit", "Unschedulable")


def test_an_image_without_the_heads_ray_is_reported(provider, standin):
    p = provider("b-noray", image=NO_RAY_IMAGE)
    launch(p)
    why = f"image {NO_RAY_IMAGE} cannot run Ray: ModuleNotFoundError: No module named 'ray'"
    wait_for(lambda: p.non_terminated_nodes({}) == [] and "burst" in p.backoff.backed_off(),
             40, "the failed pod to be reported", 1)  # fmt: skip
    assert why in p.backoff.backed_off()["burst"]
    assert "exit code 90" in p.backoff.backed_off()["burst"]
    assert_removed_and_backed_off(p, standin, "b-noray", why)


def test_a_quota_refusal_names_the_quota_and_backs_off(provider, standin):
    p = provider("b-quota", namespace="tight")
    with pytest.raises(LaunchRefused, match="exceeded quota: no-pods"):
        launch(p)
    assert "exceeded quota" in p.backoff.backed_off()["burst"]
    with pytest.raises(LaunchRefused, match="backed off"):
        launch(p)
    p.cleanup_cluster_resources()
    assert leftovers(standin.v1, "b-quota") == []


def test_an_unreachable_api_loses_no_pod(provider, standin, tmp_path):
    """A provider that cannot reach the API keeps the pods it knows (as for slurmctld)."""
    p = provider("b-lost", image=MISSING_IMAGE, pending_timeout_s=600)  # stays Pending
    launch(p)
    (pod,) = p.non_terminated_nodes({})
    dead = tmp_path / "kubeconfig"
    dead.write_text(standin.kubeconfig.read_text().replace(f":{PORT}", ":1"))
    blind = provider("b-lost", kubeconfig=dead, pending_timeout_s=600)  # a fresh process's view
    assert blind.non_terminated_nodes({}) == [pod]
    assert blind.node_info(pod).reason == "kubernetes unreachable"
    assert pod in blind.cluster.read_state()["nodes"]  # not dropped from the state
    assert f"pod/{pod}" in leftovers(standin.v1, "b-lost")


def check_config(workdir: Path, standin: Standin, kubeconfig: Path | None = None,
                 **node_config) -> Path:  # fmt: skip
    cfg = yaml.safe_load((REPO / "examples" / "ray-slurm.yaml").read_text())
    cfg["cluster_name"] = "b-check"
    cfg["provider"]["state_dir"] = str(workdir / "state")
    cfg["provider"]["kubernetes"] = {"kubeconfig": str(kubeconfig or standin.kubeconfig)}
    cfg["available_node_types"]["burst"] = burst_type(SITE_IMAGE, **node_config)
    return ALICE.write(workdir / "check.yaml", yaml.safe_dump(cfg))


def ray_slurm_check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ray-slurm check` as the user runs it."""
    return ALICE.run([ALICE.bin("ray-slurm"), "check", str(path), *args], timeout=180,
                     check=False)  # fmt: skip


def test_check_probes_the_pod_network_both_ways(standin, workdir):
    proc = ray_slurm_check(check_config(workdir, standin), "--probe-pods")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Kubernetes API v" in proc.stdout
    assert "namespace default (list pods, secrets)" in proc.stdout
    assert "pod network in default: pod -> 10.77.0.1 and back" in proc.stdout
    assert leftovers(standin.v1, "b-check") == []  # the probe pod is gone


def test_check_names_an_unreachable_api_and_a_missing_namespace(standin, workdir):
    bad = ALICE.write(workdir / "kubeconfig",
                      standin.kubeconfig.read_text().replace(f":{PORT}", ":1"), 0o600)  # fmt: skip
    proc = ray_slurm_check(check_config(workdir, standin, kubeconfig=bad))
    assert proc.returncode == 1
    assert "problem: Kubernetes: asking the API server its version:" in proc.stdout
    assert "Connection refused" in proc.stdout

    proc = ray_slurm_check(check_config(workdir, standin, namespace="nosuch"), "--probe-pods")
    assert proc.returncode == 1
    assert 'problem: listing pods in namespace nosuch: namespaces "nosuch" not found' in proc.stdout
