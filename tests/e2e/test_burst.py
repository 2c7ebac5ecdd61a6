"""Bursting onto Kubernetes when SLURM cannot deliver, against a real Kubernetes.

Everything here is real: SLURM (a partition set DOWN), Ray 2.60 (`ray up`, the autoscaler v2, a
driver, run by a user with the site's Ray environment), the official `kubernetes` client, and
Kubernetes itself (scripts/localkube: etcd, kube-apiserver with RBAC and ResourceQuota,
kube-scheduler, kube-controller-manager and a kubelet of the pinned release, containerd and runc
running each pod's image). The namespaces and RBAC are the `site` role's manifest, rendered by the
role and applied as a Kubernetes admin would; each user signs in with a certificate of their own.
The tests that drive a provider object directly run in the harness's own environment, as root,
with Alice's kubeconfig.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ALICE, BOB, EVE, parse_result, scontrol, site_ray_env, start_driver, wait_for
from kubernetes import client, config
from support.procs import run

from ray_slurm import SlurmNodeProvider
from ray_slurm.cluster.policy import LaunchRefused
from ray_slurm.config import bootstrap
from ray_slurm.config.kubetypes import head_versions

REPO = Path(__file__).resolve().parents[2]
LOCALKUBE = REPO / "scripts" / "localkube"
KUBE_STATE = Path("/var/tmp/rayhpc-localkube")  # scripts/localkube's
API_PORT = 6443
POD_NET = "10.96.1."  # the pods' bridge in scripts/localkube
RAY, PY = head_versions().split(" ")
IMAGE = f"rayproject/ray:{RAY}-py{PY.replace('.', '')}"  # the harness's Ray and Python
# The site's Ray environment, whose head a user's `ray up` starts: its own Python version.
SITE_PY = subprocess.check_output([str(site_ray_env() / "bin" / "python"), "-c",
                                   "import sys; print(*sys.version_info[:2], sep='')"],
                                  text=True).strip()  # fmt: skip
USER_NAMESPACE = f"ray-{ALICE.name}"  # what `ray-{user}` is for her
NO_RAY_IMAGE = "localhost/rayhpc/python-without-ray:1"  # runs, but has no Ray: the check fails
MISSING_IMAGE = "example.org/ray-worker:missing"  # cannot be pulled (no registry is reachable)


@dataclass
class Kube:
    kubeconfig: Path  # Alice's
    v1: client.CoreV1Api  # the Kubernetes admin's
    site_image: str  # the Ray image of the site's Python (scripts/kube/images)
    site_dir: Path  # the site role's output with bursting on


def localkube(*args: str) -> str:
    return run([str(LOCALKUBE), *args], timeout=600).stdout


def render_site(site_dir: Path, image: str) -> None:
    """The site role with bursting on, into ``site_dir``, as the sysadmin runs it."""
    users = [{"name": u.name, "subject": {"kind": "User", "name": u.name}} for u in (ALICE, BOB)]
    extra = site_dir.parent / "kube-site-vars.json"
    extra.write_text(json.dumps({"kube_site_dir": str(site_dir), "kube_site_users": users,
                                 "kube_site_image": image}))  # fmt: skip
    run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
         str(REPO / "inventories" / "localsite"), str(Path(__file__).parent / "playbooks" /
         "kube_site.yml"), "-e", f"@{extra}"], timeout=600, cwd=REPO)  # fmt: skip


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    localkube("up")  # (`make test` has started it; this links a site that came up since)
    v1 = client.CoreV1Api(config.new_client_from_config(str(KUBE_STATE / "admin.kubeconfig")))
    site_image = (KUBE_STATE / "ray-image").read_text().strip()
    assert site_image.endswith(f"-py{SITE_PY}"), (site_image, SITE_PY)
    site_dir = tmp_path_factory.mktemp("kube-site") / "shared"
    site_dir.mkdir()
    site_dir.parent.chmod(0o755)
    render_site(site_dir, site_image)
    manifest = str(site_dir / "kubernetes-rbac.yaml")
    # What an interrupted run left goes first (its namespaces, and with them its pods and Secrets).
    localkube("kubectl", "delete", "--ignore-not-found", "--wait=true", "-f", manifest)
    localkube("kubectl", "delete", "namespace", "tight", "--ignore-not-found", "--wait=true")
    localkube("kubectl", "apply", "-f", manifest)
    # Each user's own credentials, where the provider looks by default (~/.kube/config).
    for user in (ALICE, BOB, EVE):
        localkube("kubeconfig", user.name)
    kubeconfig = ALICE.home / ".kube" / "config"
    # "tight": a namespace of Alice's (the role's Role and binding) with a quota of no pods
    v1.create_namespace({"metadata": {"name": "tight"}})
    rbac = client.RbacAuthorizationV1Api(v1.api_client)
    role = rbac.read_namespaced_role("rayhpc-slurm-burst", USER_NAMESPACE)
    binding = rbac.read_namespaced_role_binding("rayhpc-slurm-burst", USER_NAMESPACE)
    meta = {"name": "rayhpc-slurm-burst"}
    rbac.create_namespaced_role("tight", {"metadata": meta, "rules": role.rules})
    rbac.create_namespaced_role_binding("tight", {"metadata": meta, "roleRef": binding.role_ref,
                                                  "subjects": binding.subjects})  # fmt: skip
    v1.create_namespaced_resource_quota("tight", {
        "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})  # fmt: skip
    yield Kube(kubeconfig, v1, site_image, site_dir)
    localkube("kubectl", "delete", "namespace", "tight", "--wait=true")
    localkube("kubectl", "delete", "--wait=true", "-f", manifest)


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
    # (1 CPU: two pods fit on the one node's 2 CPUs)
    return {"node_config": {"backend": "kubernetes", "image": image, "cpus": 1,
                            "memory": "1500M", **node_config},
            "max_workers": 2, "idle_timeout_s": 20}  # fmt: skip


@pytest.fixture
def long_partition_down():
    scontrol("update", "PartitionName=long", "State=DOWN")
    yield
    scontrol("update", "PartitionName=long", "State=UP")


def test_demand_bursts_to_pods_when_slurm_cannot_deliver(make_cluster, kube,
                                                         long_partition_down):  # fmt: skip
    def change(cfg):
        # a namespace per user, as the site role renders it by default
        # her own credentials where the client looks by default (~/.kube/config)
        cfg["provider"]["kubernetes"] = {"namespace": "ray-{user}"}
        cpu = cfg["available_node_types"]["cpu"]["node_config"]
        cpu["partition"] = "long"  # DOWN: jobs stay pending (PartitionDown)
        cpu["cpus"] = 1  # as the burst pods: two 1-CPU tasks need two of either
        cpu["pending_timeout_s"] = 20
        cfg["available_node_types"]["burst"] = burst_type(kube.site_image)

    # Room for both tasks in SLURM (2 workers): pods only once SLURM has failed to deliver.
    cluster = make_cluster("b-burst", max_workers=2, change=change)
    cluster.up()
    driver = start_driver(cluster, tasks=2, seconds=3, cpus=1)
    try:
        # SLURM first: jobs are submitted and, while they wait, no pod is created.
        jobs = wait_for(lambda: len(cluster.jobs("worker")) == 2 and cluster.jobs("worker"), 60,
                        "two SLURM worker jobs")  # fmt: skip
        assert {j.slurm_state for j in jobs} == {"PENDING"}
        time.sleep(10)
        assert leftovers(kube.v1, cluster.name) == []
        # After their pending timeout the jobs are cancelled and the demand goes to pods.
        out, err = driver.communicate(timeout=240)
        assert driver.returncode == 0, out + err
    finally:
        driver.kill()
    # The pods (and below, the Secret) are in her namespace only (before they go idle).
    label = f"rayhpc.io/cluster={cluster.name}"
    pods = kube.v1.list_pod_for_all_namespaces(label_selector=label).items
    assert pods and {p.metadata.namespace for p in pods} == {USER_NAMESPACE}, pods
    # `ray-slurm status` lists the pods with their IPs (before they go idle)
    status = cluster.status()
    assert "ray-b-burst-burst-" in status and POD_NET in status, status
    where = parse_result(out)
    hosts = {host for host, _ in where}
    assert all(h.startswith("ray-b-burst-burst-") for h in hosts), where  # pod names
    assert {p.status.pod_ip for p in pods} >= {ip for _, ip in where}, where
    assert all(ip.startswith(POD_NET) for _, ip in where), where
    assert not {j.job_id for j in jobs} & {j.job_id for j in cluster.jobs()}
    log = cluster.autoscaler_log()
    assert f"node type cpu unavailable: job {jobs[0].job_id} waited" in log
    assert "node types held at their current size: burst=0" in log  # SLURM first
    assert "launched kubernetes node ray-b-burst-burst-" in log
    # The token reached the pods as a Secret, never in the pod spec.
    secrets = [s for s in leftovers(kube.v1, cluster.name) if s.startswith("secret/")]
    assert len(secrets) == 1
    assert kube.v1.list_namespaced_secret(USER_NAMESPACE, label_selector=label).items

    # Idle pods go (idle_timeout_s 20 s), before ray down.
    wait_for(lambda: not [p for p in leftovers(kube.v1, cluster.name) if p.startswith("pod/")],
             120, "the idle burst pods to be deleted")  # fmt: skip
    cluster.down()
    assert leftovers(kube.v1, cluster.name) == []
    assert cluster.jobs() == []


@pytest.fixture
def provider(kube, tmp_path):
    """A provider as the head's autoscaler has it, with a head address but no head."""

    made: list[SlurmNodeProvider] = []

    def make(name: str, kubeconfig: Path | None = None, pending_timeout_s: int = 8,
             **node_config) -> SlurmNodeProvider:  # fmt: skip
        cfg = {
            "cluster_name": name,
            "provider": {"type": "external", "module": "ray_slurm.SlurmNodeProvider",
                         "disable_node_updaters": True, "state_dir": str(tmp_path / "state"),
                         "kubernetes": {"kubeconfig": str(kubeconfig or kube.kubeconfig),
                                        "namespace": USER_NAMESPACE}},
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


def assert_removed_and_backed_off(provider, kube, name: str, why: str) -> None:
    wait_for(lambda: not provider.non_terminated_nodes({}), 40, "the pod to be removed", 1)
    assert leftovers(kube.v1, name) == [f"secret/{provider.backends['kubernetes'].secret}"]
    backed_off = provider.backoff.backed_off()
    assert why in backed_off.get("burst", ""), backed_off
    with pytest.raises(LaunchRefused, match="backed off"):
        launch(provider)


def test_a_pod_whose_image_cannot_be_pulled_is_removed_with_the_reason(provider, kube):
    p = provider("b-pull", image=MISSING_IMAGE)
    launch(p, count=2)
    assert len(p.non_terminated_nodes({"ray-user-node-type": "burst"})) == 2
    # the kubelet's words: ErrImagePull, then ImagePullBackOff between its tries
    reason = wait_reason(p, "ImagePull")
    assert f'failed to pull and unpack image "{MISSING_IMAGE}"' in reason, reason
    assert_removed_and_backed_off(
        p, kube, "b-pull", f'failed to pull and unpack image "{MISSING_IMAGE}"'
    )


def test_an_unschedulable_pod_is_removed_with_the_reason(provider, kube):
    p = provider("b-nofit", node_selector={"pool": "gpu"})
    launch(p)
    reason = wait_reason(p, "Unschedulable")
    assert "didn't match Pod's node affinity/selector" in reason
    assert_removed_and_backed_off(p, kube, "b-nofit", "Unschedulable")


def test_an_image_without_the_heads_ray_is_reported(provider, kube):
    p = provider("b-noray", image=NO_RAY_IMAGE)
    launch(p)
    why = f"image {NO_RAY_IMAGE} cannot run Ray: ModuleNotFoundError: No module named 'ray'"
    wait_for(lambda: p.non_terminated_nodes({}) == [] and "burst" in p.backoff.backed_off(),
             40, "the failed pod to be reported", 1)  # fmt: skip
    assert why in p.backoff.backed_off()["burst"]
    assert "exit code 90" in p.backoff.backed_off()["burst"]
    assert_removed_and_backed_off(p, kube, "b-noray", why)


def test_a_quota_refusal_names_the_quota_and_backs_off(provider, kube):
    p = provider("b-quota", namespace="tight")
    with pytest.raises(LaunchRefused, match="exceeded quota: no-pods"):
        launch(p)
    assert "exceeded quota" in p.backoff.backed_off()["burst"]
    with pytest.raises(LaunchRefused, match="backed off"):
        launch(p)
    p.cleanup_cluster_resources()
    assert leftovers(kube.v1, "b-quota") == []


def test_an_unreachable_api_loses_no_pod(provider, kube, tmp_path):
    """A provider that cannot reach the API keeps the pods it knows (as for slurmctld)."""
    p = provider("b-lost", image=MISSING_IMAGE, pending_timeout_s=600)  # stays Pending
    launch(p)
    (pod,) = p.non_terminated_nodes({})
    dead = tmp_path / "kubeconfig"
    dead.write_text(kube.kubeconfig.read_text().replace(f":{API_PORT}", ":1"))
    blind = provider("b-lost", kubeconfig=dead, pending_timeout_s=600)  # a fresh process's view
    assert blind.non_terminated_nodes({}) == [pod]
    assert blind.node_info(pod).reason == "kubernetes unreachable"
    assert pod in blind.cluster.read_state()["nodes"]  # not dropped from the state
    assert f"pod/{pod}" in leftovers(kube.v1, "b-lost")


def check_config(workdir: Path, kube: Kube, kubeconfig: Path | None = None,
                 **node_config) -> Path:  # fmt: skip
    cfg = yaml.safe_load((REPO / "examples" / "ray-slurm.yaml").read_text())
    cfg["cluster_name"] = "b-check"
    cfg["provider"]["state_dir"] = str(workdir / "state")
    cfg["provider"]["kubernetes"] = {
        "kubeconfig": str(kubeconfig or kube.kubeconfig),
        "namespace": "ray-{user}",
    }
    cfg["available_node_types"]["burst"] = burst_type(kube.site_image, **node_config)
    return ALICE.write(workdir / "check.yaml", yaml.safe_dump(cfg))


def ray_slurm_check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ray-slurm check` as the user runs it."""
    return ALICE.run([ALICE.bin("ray-slurm"), "check", str(path), *args], timeout=180,
                     check=False)  # fmt: skip


def test_check_probes_the_pod_network_both_ways(kube, workdir):
    proc = ray_slurm_check(check_config(workdir, kube), "--probe-pods")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Kubernetes API v" in proc.stdout
    assert f"namespace {USER_NAMESPACE} (list pods, secrets)" in proc.stdout
    assert f"pod network in {USER_NAMESPACE}: pod -> 10.77.0.1 and back" in proc.stdout
    assert leftovers(kube.v1, "b-check") == []  # the probe pod is gone


def test_check_names_an_unreachable_api_and_a_missing_namespace(kube, workdir):
    bad = ALICE.write(workdir / "kubeconfig",
                      kube.kubeconfig.read_text().replace(f":{API_PORT}", ":1"), 0o600)  # fmt: skip
    proc = ray_slurm_check(check_config(workdir, kube, kubeconfig=bad))
    assert proc.returncode == 1
    assert "problem: Kubernetes: asking the API server its version:" in proc.stdout
    assert "Connection refused" in proc.stdout

    proc = ray_slurm_check(check_config(workdir, kube, namespace="nosuch"), "--probe-pods")
    assert proc.returncode == 1
    # (RBAC answers before the namespace is looked up: she may not list pods there)
    assert (
        'problem: listing pods in namespace nosuch: pods is forbidden: User "rsl-alice" '
        'cannot list resource "pods" in API group "" in the namespace "nosuch"'
    ) in proc.stdout


@functools.cache
def kubectl() -> str:
    """The release's kubectl (scripts/kube/build prints where its binaries are), found once."""
    built = run([str(REPO / "scripts" / "kube" / "build"), "--print-dir"]).stdout.split()[-1]
    return str(Path(built) / "kubectl")


def kubectl_as(user, *args: str) -> subprocess.CompletedProcess[str]:
    """The release's kubectl, run by ``user`` with their own ~/.kube/config."""
    return user.run([kubectl(), *args], timeout=60, check=False)


def test_the_site_roles_rbac_lets_each_user_manage_only_their_own_pods_and_secret(kube):
    """Asked as each user, with their own credentials: the role's manifest lets Alice and Bob
    do in their own namespace what the provider does, and nothing in the other's or elsewhere;
    Eve, who has no namespace, may do nothing. Then Bob really tries to read Alice's Secret."""
    provider_verbs = [("create", "pods"), ("delete", "pods"), ("watch", "pods"),
                      ("get", "pods/log"), ("create", "secrets"), ("get", "secrets"),
                      ("deletecollection", "secrets"), ("list", "services")]  # fmt: skip
    never = [("create", "pods", "default"), ("get", "secrets", "kube-system"),
             ("list", "nodes", ""), ("create", "rolebindings", USER_NAMESPACE),
             ("update", "resourcequotas", "tight")]  # fmt: skip
    answers = {}
    for user in (ALICE, BOB, EVE):
        for ns in (f"ray-{ALICE.name}", f"ray-{BOB.name}"):
            for verb, resource in provider_verbs:
                out = kubectl_as(user, "auth", "can-i", verb, resource, "-n", ns).stdout.strip()
                answers[user.name, ns, verb, resource] = out
        for verb, resource, ns in never:
            ns_args = ("-n", ns) if ns else ()
            out = kubectl_as(user, "auth", "can-i", verb, resource, *ns_args).stdout.strip()
            assert out == "no", (user.name, verb, resource, ns, out)
    for (user, ns, verb, resource), out in answers.items():
        expected = "yes" if ns == f"ray-{user}" else "no"
        assert out == expected, (user, ns, verb, resource, out)
    made = kubectl_as(ALICE, "create", "secret", "generic", "alices", "--from-literal=token=s3cr3t",
                      "-n", USER_NAMESPACE)  # fmt: skip
    assert made.returncode == 0, made.stderr
    try:
        peek = kubectl_as(BOB, "get", "secret", "alices", "-n", USER_NAMESPACE, "-o", "yaml")
        assert peek.returncode == 1 and "s3cr3t" not in peek.stdout + peek.stderr
        assert f'User "{BOB.name}" cannot get resource "secrets"' in peek.stderr, peek.stderr
    finally:
        kubectl_as(ALICE, "delete", "secret", "alices", "-n", USER_NAMESPACE)


def test_a_pod_spec_the_api_refuses_is_reported_as_such(provider, kube):
    """A node_config the provider passes on but the API server's schema refuses (a toleration
    with operator Exists and a value) is refused at launch with the API's own words, naming
    the field; the type is backed off; no pod is left."""
    p = provider("b-invalid", tolerations=[{"key": "gpu", "operator": "Exists", "value": "yes"}])
    with pytest.raises(LaunchRefused, match=r"spec\.tolerations\[0\]\.operator") as refused:
        launch(p)
    assert "is invalid" in str(refused.value), refused.value
    assert "spec.tolerations[0].operator" in p.backoff.backed_off()["burst"]
    assert [o for o in leftovers(kube.v1, "b-invalid") if o.startswith("pod/")] == []


def test_a_restarted_api_server_loses_no_pod(provider, kube, caplog):
    """The API server dies (killed: the pods' records stay in etcd) and starts again: meanwhile
    the provider keeps the pod it last saw; after, it lists it again and removes it."""
    p = provider("b-restart", image=MISSING_IMAGE, pending_timeout_s=600)  # stays Pending
    launch(p)
    (pod,) = p.non_terminated_nodes({})
    pid = int((KUBE_STATE / "run" / "kube-apiserver.pid").read_text())
    run(["kill", "-KILL", str(pid)])
    try:
        gone = "cannot list kubernetes nodes, keeping the last known"
        wait_for(lambda: p.non_terminated_nodes({}) == [pod] and gone in caplog.text, 60,
                 "the provider to see the API gone", 1)  # fmt: skip
        assert p.non_terminated_nodes({}) == [pod]
        assert pod in p.cluster.read_state()["nodes"]  # not dropped from the state
    finally:
        localkube("up")  # starts what is not running: the API server
    # the pod is still there, and the provider, listing again, has it and removes it
    wait_for(lambda: f"pod/{pod}" in leftovers(kube.v1, "b-restart"), 60, "the API back", 1)
    caplog.clear()
    assert p.non_terminated_nodes({}) == [pod]
    p.cleanup_cluster_resources()
    wait_for(lambda: not leftovers(kube.v1, "b-restart"), 60, "the pod and Secret to go")


def test_a_pod_name_taken_in_the_namespace_is_a_conflict_that_loses_no_pod(
    provider, kube, monkeypatch
):
    """The API server refuses a pod whose name is taken (409 AlreadyExists: here the namespace's
    admin made one of that name): the provider picks another name and launches; the other pod
    is neither adopted nor touched, and `ray down` leaves it."""
    from ray_slurm.backends.kube import podspec

    suffixes = iter(["0c0c0c"])
    real = podspec.secrets.token_hex
    monkeypatch.setattr(podspec.secrets, "token_hex", lambda n: next(suffixes, None) or real(n))
    taken = "ray-b-clash-burst-0c0c0c"
    kube.v1.create_namespaced_pod(USER_NAMESPACE, {
        "metadata": {"name": taken},
        "spec": {"containers": [{"name": "c", "image": "localhost/rayhpc/pause:1"}]}})  # fmt: skip
    try:
        p = provider("b-clash", image=MISSING_IMAGE, pending_timeout_s=600)
        launch(p)
        (pod,) = p.non_terminated_nodes({})
        assert list(suffixes) == []  # the taken name was tried first (and refused: 409)
        assert pod != taken and pod.startswith("ray-b-clash-burst-")
        p.cleanup_cluster_resources()
        wait_for(lambda: not leftovers(kube.v1, "b-clash"), 60, "the pod and Secret to go")
        assert (
            kube.v1.read_namespaced_pod(taken, USER_NAMESPACE).metadata.deletion_timestamp is None
        )
    finally:
        kube.v1.delete_namespaced_pod(taken, USER_NAMESPACE, grace_period_seconds=0)
