"""Pod status documents for each point of a pod's life, shaped as a kubelet reports them.

The official client validates what it reads (``V1ContainerStatus`` needs ``image``, ``imageID``,
``name``, ``ready`` and ``restartCount``; a terminated state needs ``exitCode``), and the provider
reads phases, conditions and container states; these builders keep those shapes in one place.
"""

from __future__ import annotations

import signal
from typing import Any

from .store import now_rfc3339

Pod = dict[str, Any]


def _condition(
    kind: str, ok: bool, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339(),
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _keep_times(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A condition's lastTransitionTime changes only when its status does."""
    before = {c["type"]: c for c in old}
    for cond in new:
        prev = before.get(cond["type"])
        if prev and prev["status"] == cond["status"]:
            cond["lastTransitionTime"] = prev["lastTransitionTime"]
    return new


def set_conditions(
    pod: Pod, scheduled: bool, ready: bool, reason: str | None = None, message: str | None = None
) -> None:
    status = pod.setdefault("status", {})
    if not scheduled:
        new = [_condition("PodScheduled", False, "Unschedulable", message)]
    else:
        not_ready = None if ready else "ContainersNotReady"
        new = [
            _condition("PodScheduled", True),
            _condition("Initialized", True),
            _condition("ContainersReady", ready, not_ready, None if ready else reason),
            _condition("Ready", ready, not_ready, None if ready else reason),
        ]
    status["conditions"] = _keep_times(status.get("conditions") or [], new)


def container_statuses(
    pod: Pod,
    first_state: dict[str, Any],
    ready: bool = False,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
    container_id: str | None = None,
) -> list[dict[str, Any]]:
    """Statuses of every container: the first one's state given, the others never run here."""
    out = []
    for i, container in enumerate(pod["spec"]["containers"]):
        entry: dict[str, Any] = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready if i == 0 else False,
            "restartCount": restarts if i == 0 else 0,
            "started": "running" in first_state if i == 0 else False,
            "state": first_state
            if i == 0
            else {
                "waiting": {
                    "reason": "NotRunByStandin",
                    "message": "the stand-in runs only a pod's first container",
                }
            },
            "lastState": (last or {}) if i == 0 else {},
        }
        if i == 0 and container_id:
            entry["containerID"] = container_id
            entry["imageID"] = f"standin://{container['image']}"
        out.append(entry)
    return out


def unschedulable(pod: Pod, message: str) -> None:
    pod["status"]["phase"] = "Pending"
    set_conditions(pod, scheduled=False, ready=False, message=message)


def bound(pod: Pod, node: str, host_ip: str) -> None:
    """Bound to a host: ContainerCreating until the process starts."""
    pod["spec"]["nodeName"] = node
    status = pod["status"]
    status.update(
        phase="Pending", hostIP=host_ip, hostIPs=[{"ip": host_ip}], startTime=now_rfc3339()
    )
    waiting(pod, "ContainerCreating", None)


def waiting(
    pod: Pod,
    reason: str,
    message: str | None,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
) -> None:
    """The first container waits (ContainerCreating, ImagePullBackOff, CrashLoopBackOff, ...)."""
    state: dict[str, Any] = {"waiting": {"reason": reason}}
    if message:
        state["waiting"]["message"] = message
    pod["status"]["containerStatuses"] = container_statuses(
        pod, state, restarts=restarts, last=last
    )
    set_conditions(
        pod,
        scheduled=True,
        ready=False,
        reason=f"containers with unready status: [{pod['spec']['containers'][0]['name']}]",
    )


def running(
    pod: Pod,
    pod_ip: str,
    started: str,
    container_id: str,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
) -> None:
    status = pod["status"]
    status.update(phase="Running", podIP=pod_ip, podIPs=[{"ip": pod_ip}])
    state = {"running": {"startedAt": started}}
    others_ready = len(pod["spec"]["containers"]) == 1
    status["containerStatuses"] = container_statuses(pod, state, True, restarts, last, container_id)
    set_conditions(
        pod, scheduled=True, ready=others_ready, reason="the stand-in runs only the first container"
    )


def terminated_state(returncode: int, started: str, container_id: str) -> dict[str, Any]:
    """A terminated state; a signal death reads as 128+signal, like a container runtime's."""
    state: dict[str, Any] = {
        "startedAt": started,
        "finishedAt": now_rfc3339(),
        "containerID": container_id,
    }
    if returncode < 0:
        state["exitCode"] = 128 - returncode
        state["signal"] = -returncode
        state["reason"] = "Error"
        state["message"] = f"killed by {signal.Signals(-returncode).name}"
    else:
        state["exitCode"] = returncode
        state["reason"] = "Completed" if returncode == 0 else "Error"
    return {"terminated": state}


def finished(pod: Pod, state: dict[str, Any], restarts: int) -> None:
    """The container ended and will not restart: Succeeded or Failed."""
    code = state["terminated"]["exitCode"]
    pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
    container_id = state["terminated"].get("containerID")
    pod["status"]["containerStatuses"] = container_statuses(
        pod, state, False, restarts, None, container_id
    )
    set_conditions(pod, scheduled=True, ready=False, reason="PodCompleted")
