"""Pods as processes on cloud hosts: phases, the process's network and UTS namespaces, env from
secrets and the downward API, exit codes, graceful deletion, image pull failures, scheduling
limits, and the network between the pods and the login node.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request

from kst_helpers import HOSTS, IP_BASE, PREFIX, Standin, gone, netns_pids, pod, wait_for, wait_phase
from kubernetes import client


def container_pid(p: client.V1Pod) -> int:
    """The process behind a running pod (containerID is standin://<host>/<pid>)."""
    return int(p.status.container_statuses[0].container_id.rsplit("/", 1)[1])


def test_pod_runs_in_its_cloud_host(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_pod(ns, pod("sleeper", ["sleep", "1000"]))
    first = wait_for(
        lambda: v1.read_namespaced_pod("sleeper", ns).status.container_statuses, 5, "a status"
    )
    assert first[0].state.waiting.reason == "ContainerCreating"
    running = wait_phase(v1, ns, "sleeper", {"Running"})
    node, ip = running.spec.node_name, running.status.pod_ip
    assert node.startswith(PREFIX) and ip == running.status.host_ip
    assert ip == f"10.77.0.{IP_BASE + int(node.removeprefix(PREFIX))}"
    assert {c.type: c.status for c in running.status.conditions} == {
        "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True",
    }  # fmt: skip
    state = running.status.container_statuses[0]
    assert state.ready and state.state.running.started_at is not None
    pid = container_pid(running)
    assert pid in netns_pids(node)
    with open(f"/proc/{pid}/cmdline") as cmdline:
        assert cmdline.read().split("\0")[:2] == ["sleep", "1000"]
    hostname = subprocess.run(
        ["nsenter", "-t", str(pid), "--uts", "hostname"], capture_output=True, text=True, check=True
    )
    assert hostname.stdout.strip() == "sleeper"
    v1.delete_namespaced_pod("sleeper", ns, grace_period_seconds=10)
    wait_for(lambda: gone(lambda: v1.read_namespaced_pod("sleeper", ns)), 10, "pod removed")
    assert netns_pids(node) == set()


def test_env_secret_fieldref_and_exit(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_secret(
        ns, client.V1Secret(metadata={"name": "ray-token"}, string_data={"token": "tok-123"})
    )
    env = [
        client.V1EnvVar(
            name="RAY_AUTH_TOKEN",
            value_from={"secretKeyRef": {"name": "ray-token", "key": "token"}},
        ),
        client.V1EnvVar(name="ME", value_from={"fieldRef": {"fieldPath": "metadata.name"}}),
        client.V1EnvVar(name="MY_IP", value_from={"fieldRef": {"fieldPath": "status.podIP"}}),
        client.V1EnvVar(name="GREETING", value="hi $(ME)"),
    ]
    script = 'echo "token=$RAY_AUTH_TOKEN me=$ME ip=$MY_IP host=$(hostname) $GREETING pwd=$(pwd)"'
    body = pod(
        "printer",
        ["sh", "-c", script],
        container={"env": env, "working_dir": "/tmp"},
    )
    v1.create_namespaced_pod(ns, body)
    done = wait_phase(v1, ns, "printer", {"Succeeded", "Failed"})
    assert done.status.phase == "Succeeded"
    term = done.status.container_statuses[0].state.terminated
    assert term.exit_code == 0 and term.reason == "Completed"
    log = v1.read_namespaced_pod_log("printer", ns)
    ip = done.status.pod_ip
    assert log.strip() == f"token=tok-123 me=printer ip={ip} host=printer hi printer pwd=/tmp"

    v1.create_namespaced_pod(ns, pod("failer", ["sh", "-c", "echo bye; exit 3"]))
    failed = wait_phase(v1, ns, "failer", {"Succeeded", "Failed"})
    assert failed.status.phase == "Failed"
    term = failed.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason) == (3, "Error")


def test_missing_secret_waits_with_config_error(v1: client.CoreV1Api, ns: str) -> None:
    env = [client.V1EnvVar(name="T", value_from={"secretKeyRef": {"name": "late", "key": "k"}})]
    v1.create_namespaced_pod(ns, pod("waiter", ["sh", "-c", 'echo "$T"'], container={"env": env}))

    def reason() -> str | None:
        statuses = v1.read_namespaced_pod("waiter", ns).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.reason if waiting else None

    wait_for(lambda: reason() == "CreateContainerConfigError", 10, "CreateContainerConfigError")
    assert 'secret "late" not found' in str(v1.read_namespaced_pod("waiter", ns).status)
    v1.create_namespaced_secret(
        ns, client.V1Secret(metadata={"name": "late"}, string_data={"k": "v"})
    )
    assert wait_phase(v1, ns, "waiter", {"Succeeded"}).status.phase == "Succeeded"
    assert v1.read_namespaced_pod_log("waiter", ns) == "v\n"


def test_graceful_deletion_then_kill(v1: client.CoreV1Api, ns: str) -> None:
    # The shell ignores SIGTERM, and so does its sleep: only the SIGKILL after the grace ends it.
    body = pod("stubborn", ["sh", "-c", "trap '' TERM; sleep 1000"])
    v1.create_namespaced_pod(ns, body)
    running = wait_phase(v1, ns, "stubborn", {"Running"})
    node = running.spec.node_name
    time.sleep(0.3)  # let the shell set its trap
    start = time.monotonic()
    deleted = v1.delete_namespaced_pod("stubborn", ns, grace_period_seconds=2)
    assert deleted.metadata.deletion_grace_period_seconds == 2
    time.sleep(1)
    assert v1.read_namespaced_pod("stubborn", ns).metadata.deletion_timestamp is not None
    assert netns_pids(node), "still running within the grace period"
    wait_for(lambda: gone(lambda: v1.read_namespaced_pod("stubborn", ns)), 10, "pod removed")
    assert 1.5 <= time.monotonic() - start < 6
    wait_for(lambda: not netns_pids(node), 5, "host empty")


def test_image_pull_backoff(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_pod(ns, pod("old", ["true"], image="rayproject/ray:1.13.0"))

    def waiting() -> client.V1ContainerStateWaiting | None:
        statuses = v1.read_namespaced_pod("old", ns).status.container_statuses or []
        state = statuses[0].state.waiting if statuses else None
        return state if state and state.reason == "ImagePullBackOff" else None

    state = wait_for(waiting, 10, "ImagePullBackOff")
    assert state.message == 'Back-off pulling image "rayproject/ray:1.13.0"'
    current = v1.read_namespaced_pod("old", ns)
    assert current.status.phase == "Pending"
    assert netns_pids(current.spec.node_name) == set()
    v1.delete_namespaced_pod("old", ns)
    wait_for(lambda: gone(lambda: v1.read_namespaced_pod("old", ns)), 5, "pod removed")


def unschedulable(v1: client.CoreV1Api, ns: str, name: str) -> str | None:
    conditions = v1.read_namespaced_pod(name, ns).status.conditions or []
    for cond in conditions:
        if cond.type == "PodScheduled" and cond.status == "False":
            assert cond.reason == "Unschedulable"
            return cond.message
    return None


def test_unschedulable_when_hosts_are_full(v1: client.CoreV1Api, ns: str) -> None:
    names = [f"w{i}" for i in range(HOSTS)]
    for name in names:
        v1.create_namespaced_pod(ns, pod(name, ["sleep", "1000"]))
    nodes = {wait_phase(v1, ns, name, {"Running"}).spec.node_name for name in names}
    assert len(nodes) == HOSTS  # one pod per cloud host
    v1.create_namespaced_pod(ns, pod("extra", ["sleep", "1000"]))
    message = wait_for(lambda: unschedulable(v1, ns, "extra"), 5, "extra Unschedulable")
    assert message == f"0/{HOSTS} nodes are available: {HOSTS} node(s) already run a pod " \
        "(stand-in: one pod per cloud host)."  # fmt: skip
    assert v1.read_namespaced_pod("extra", ns).status.phase == "Pending"
    v1.delete_namespaced_pod("w0", ns, grace_period_seconds=5)
    assert wait_phase(v1, ns, "extra", {"Running"}).spec.node_name in nodes
    for name in names[1:] + ["extra"]:
        v1.delete_namespaced_pod(name, ns, grace_period_seconds=0)


def test_unschedulable_selector_and_resources(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_pod(ns, pod("gpu", ["true"], node_selector={"accelerator": "a100"}))
    big = {"resources": client.V1ResourceRequirements(requests={"cpu": "3", "memory": "1Gi"})}
    v1.create_namespaced_pod(ns, pod("big", ["true"], container=big))
    gpus = {"resources": client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"})}
    v1.create_namespaced_pod(ns, pod("gpus", ["true"], container=gpus))
    expected = {
        "gpu": "node(s) didn't match Pod's node affinity/selector",
        "big": "Insufficient cpu",
        "gpus": "Insufficient nvidia.com/gpu",
    }
    for name, reason in expected.items():
        message = wait_for(lambda n=name: unschedulable(v1, ns, n), 5, f"{name} Unschedulable")
        assert message == f"0/{HOSTS} nodes are available: {HOSTS} {reason}."
    fits = {"resources": client.V1ResourceRequirements(requests={"cpu": "2", "memory": "4Gi"})}
    v1.create_namespaced_pod(ns, pod("fits", ["true"], container=fits))
    assert wait_phase(v1, ns, "fits", {"Succeeded"}).status.phase == "Succeeded"


def test_restart_policy_on_failure(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_pod(ns, pod("crash", ["sh", "-c", "exit 1"], restart_policy="OnFailure"))

    def backoff() -> client.V1ContainerStatus | None:
        statuses = v1.read_namespaced_pod("crash", ns).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return statuses[0] if waiting and waiting.reason == "CrashLoopBackOff" else None

    status = wait_for(backoff, 10, "CrashLoopBackOff")
    assert status.restart_count == 1 and status.last_state.terminated.exit_code == 1
    assert v1.read_namespaced_pod("crash", ns).status.phase == "Running"


def test_network_pod_to_login_and_back(v1: client.CoreV1Api, ns: str, standin: Standin) -> None:
    probe = (
        "import urllib.request;"
        f"print(urllib.request.urlopen('{standin.url}/healthz', timeout=5).read().decode())"
    )
    v1.create_namespaced_pod(ns, pod("caller", ["python", "-c", probe]))
    done = wait_phase(v1, ns, "caller", {"Succeeded", "Failed"})
    assert done.status.phase == "Succeeded", v1.read_namespaced_pod_log("caller", ns)
    assert v1.read_namespaced_pod_log("caller", ns).strip() == "ok"

    server = ["python", "-m", "http.server", "18080", "--bind", "0.0.0.0"]  # noqa: S104
    v1.create_namespaced_pod(ns, pod("web", server, container={"working_dir": "/usr/share"}))
    ip = wait_phase(v1, ns, "web", {"Running"}).status.pod_ip

    def fetch() -> int | None:
        try:
            with urllib.request.urlopen(f"http://{ip}:18080/", timeout=2) as answer:
                return answer.status
        except OSError:
            return None

    assert wait_for(fetch, 10, f"http://{ip}:18080/ from the login namespace") == 200
