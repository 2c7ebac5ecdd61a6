"""scripts/kube-standin itself: idempotent up and down, status, the quota options, and a down that
cleans up after a server that was killed (its pod processes and cloud hosts do not outlive it).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from kst_helpers import IMAGE, launcher, netns_pids, pod, wait_for, wait_phase
from kubernetes import client, config
from kubernetes.client.rest import ApiException

PORT = 16445
HOST = "rsl-kl1"  # this test's own single cloud host, at 10.77.0.141


def test_up_status_down(tmp_path: Path, standin: object) -> None:
    state = tmp_path / "kube"
    args = ("--hosts", "1", "--host-prefix", "rsl-kl", "--ip-base", "140", "--quota-pods", "1")
    up = launcher("up", *args, state_dir=state, port=PORT)
    assert up.returncode == 0, up.stderr
    assert "rsl-kl1=10.77.0.141" in up.stdout
    again = launcher("up", *args, state_dir=state, port=PORT)
    assert again.returncode == 0 and "already running" in again.stdout
    assert oct((state / "kubeconfig").stat().st_mode & 0o777) == "0o600"

    v1 = client.CoreV1Api(config.new_client_from_config(config_file=str(state / "kubeconfig")))
    assert [n.metadata.name for n in v1.list_node().items] == [HOST]
    v1.create_namespaced_pod("default", pod("one", ["sleep", "1000"], image=IMAGE))
    running = wait_phase(v1, "default", "one", {"Running"})
    assert running.status.pod_ip == "10.77.0.141"
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_pod("default", pod("two", ["sleep", "1000"], image=IMAGE))
    assert exc.value.status == 403
    assert "exceeded quota: standin-quota" in json.loads(exc.value.body)["message"]

    status = launcher("status", state_dir=state, port=PORT)
    assert status.returncode == 0, status.stderr
    assert f"pod default/one Running {HOST} 10.77.0.141" in status.stdout

    # A crashed server leaves its pod running; down still removes the pod and the host.
    pid = int((state / "server.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}/cmdline") or _zombie(pid), 5, "server dead")
    assert netns_pids(HOST)
    down = launcher("down", state_dir=state, port=PORT)
    assert down.returncode == 0, down.stderr
    assert not Path(f"/run/netns/{HOST}").exists()
    assert not (state / "server.pid").exists() and not (state / "kubeconfig").exists()
    assert launcher("down", state_dir=state, port=PORT).returncode == 0
    assert launcher("status", state_dir=state, port=PORT).returncode == 1


def test_clean_down_stops_pods(tmp_path: Path, standin: object) -> None:
    state = tmp_path / "kube"
    up = launcher("up", "--hosts", "1", "--host-prefix", "rsl-kl", "--ip-base", "140",
                  state_dir=state, port=PORT)  # fmt: skip
    assert up.returncode == 0, up.stderr
    v1 = client.CoreV1Api(config.new_client_from_config(config_file=str(state / "kubeconfig")))
    v1.create_namespaced_pod("default", pod("one", ["sleep", "1000"], image=IMAGE))
    pid = int(
        wait_phase(v1, "default", "one", {"Running"})
        .status.container_statuses[0]
        .container_id.rsplit("/", 1)[1]
    )
    assert launcher("down", state_dir=state, port=PORT).returncode == 0
    assert not os.path.exists(f"/proc/{pid}/cmdline") or _zombie(pid)
    assert not Path(f"/run/netns/{HOST}").exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
