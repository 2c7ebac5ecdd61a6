"""The pod lifecycle on cloud hosts: what a scheduler plus a kubelet per host would do.

One reconcile loop (woken by every store change, and at least every ``tick`` seconds) schedules
pending pods onto free hosts, "pulls" images (maps them to local environments), starts the first
container as a process in the host's network and a UTS namespace of its own (hostname = pod name),
reports its exit, restarts it per ``restartPolicy``, and carries out graceful deletion: SIGTERM to
the process group, SIGKILL to everything on the host once the grace period is over, then removal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cloudhosts, images, podenv, podstatus, scheduler
from .cloudhosts import CloudHost
from .store import Store, now_rfc3339

log = logging.getLogger("kube_standin.runner")

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# sh inside the host's namespaces: set the hostname, enter the working dir, become the command.
_LAUNCH = 'hostname "$1" && cd "$2" && shift 2 && exec "$@"'


@dataclass
class Container:
    """A running (or just ended) first container of a pod."""

    uid: str
    namespace: str
    name: str
    host: CloudHost
    proc: subprocess.Popen[bytes]
    started: str
    restarts: int
    term_at: float | None = None  # monotonic time SIGTERM was sent


@dataclass
class PodRunner:
    store: Store
    hosts: list[CloudHost]
    shape: scheduler.HostShape
    image_rules: list[images.ImageRule]
    state_dir: Path
    tmp_root: Path
    start_delay: float = 1.0
    tick: float = 0.2
    occupant: dict[str, str] = field(default_factory=dict)  # host -> pod uid
    draining: set[str] = field(default_factory=set)  # hosts whose leftovers are being killed
    containers: dict[str, Container] = field(default_factory=dict)  # pod uid -> container
    not_before: dict[str, float] = field(default_factory=dict)  # pod uid -> earliest (re)start
    restarts: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._created = now_rfc3339()
        self.store.add_listener(self._wake.set)

    # -- public ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float = 5.0) -> None:
        """Stop every pod process (TERM, then KILL after ``grace``) and the loop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        for container in self.containers.values():
            _signal_group(container.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (
            any(c.proc.poll() is None for c in self.containers.values())
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        for host in self.hosts:
            cloudhosts.kill_all(host.name)
        shutil.rmtree(self.tmp_root, ignore_errors=True)

    def nodes(self) -> list[dict[str, Any]]:
        return [scheduler.node_object(h, self.shape, self._created) for h in self.hosts]

    def log_path(self, namespace: str, name: str, uid: str) -> Path:
        return self.state_dir / "pods" / namespace / f"{name}.{uid[:8]}" / "container.log"

    def read_log(self, namespace: str, name: str, tail: int | None) -> str:
        pod = self.store.get("pods", namespace, name)
        try:
            text = self.log_path(namespace, name, pod["metadata"]["uid"]).read_text(
                errors="replace"
            )
        except FileNotFoundError:
            return ""
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""
        return text

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.tick)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.reconcile()
            except Exception:  # one bad pod must not stop every other pod's lifecycle
                log.exception("reconcile failed")

    def reconcile(self) -> None:
        pods = {p["metadata"]["uid"]: p for p in self.store.snapshot("pods")}
        for uid, container in list(self.containers.items()):
            self._watch_container(container, pods.get(uid))
        # Container exits just changed pods: decide the rest on a fresh view.
        pods = {p["metadata"]["uid"]: p for p in self.store.snapshot("pods")}
        for host, uid in list(self.occupant.items()):
            pod = pods.get(uid)
            if uid not in self.containers and (
                pod is None or pod["status"].get("phase") in ("Succeeded", "Failed")
            ):
                self._release(host, uid)
        for host in list(self.draining):
            if cloudhosts.kill_all(host) == 0:
                self.draining.discard(host)
        for uid, pod in pods.items():
            meta, spec = pod["metadata"], pod["spec"]
            if meta.get("deletionTimestamp"):
                if uid not in self.containers:
                    self.store.remove_pod(meta["namespace"], meta["name"], uid)
            elif pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            elif not spec.get("nodeName"):
                self._schedule(pod)
            elif uid not in self.containers and time.monotonic() >= self.not_before.get(uid, 0):
                self._start(pod)

    def _update(self, pod: dict[str, Any], mutate: Any) -> bool:
        meta = pod["metadata"]
        return self.store.update_status(meta["namespace"], meta["name"], meta["uid"], mutate)

    def _release(self, host: str, uid: str) -> None:
        del self.occupant[host]
        self.draining.add(host)
        self.not_before.pop(uid, None)
        self.restarts.pop(uid, None)
        shutil.rmtree(self.tmp_root / uid[:8], ignore_errors=True)
        self._wake.set()

    # -- scheduling and start ----------------------------------------------------------------
    def _schedule(self, pod: dict[str, Any]) -> None:
        busy = set(self.occupant) | self.draining
        host, message = scheduler.choose(pod, self.hosts, self.shape, busy)
        if host is None:
            self._update(pod, lambda p: podstatus.unschedulable(p, message))
            return
        if self._update(pod, lambda p: podstatus.bound(p, host.name, host.ip)):
            uid = pod["metadata"]["uid"]
            self.occupant[host.name] = uid
            self.not_before[uid] = time.monotonic() + self.start_delay
            log.info(
                "pod %s/%s bound to %s",
                pod["metadata"]["namespace"],
                pod["metadata"]["name"],
                host.name,
            )
            self._wake.set()

    def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid, container = meta["uid"], spec["containers"][0]
        host = next(h for h in self.hosts if h.name == spec["nodeName"])
        restarts, last = self.restarts.get(uid, (0, {}))
        env_dir = images.resolve(container["image"], self.image_rules)
        if env_dir is None:
            message = f'Back-off pulling image "{container["image"]}"'
            self._update(
                pod, lambda p: podstatus.waiting(p, "ImagePullBackOff", message, restarts, last)
            )
            self.not_before[uid] = time.monotonic() + 5
            return
        pod_dir = self.log_path(meta["namespace"], meta["name"], uid).parent
        tmp = self.tmp_root / uid[:8]
        base = {
            "PATH": f"{env_dir}/bin:{BASE_PATH}",
            "VIRTUAL_ENV": str(env_dir),
            "HOSTNAME": _hostname(meta["name"]),
            "HOME": str(pod_dir / "home"),
            "TMPDIR": str(tmp),
            "LANG": "C.UTF-8",
        }
        pod["status"].update(podIP=host.ip, hostIP=host.ip)  # for fieldRef status.podIP
        try:
            env, argv = podenv.resolve(pod, container, base, self._secret(meta["namespace"]))
        except podenv.ConfigError as exc:
            message = str(exc)
            self._update(
                pod,
                lambda p: podstatus.waiting(
                    p, "CreateContainerConfigError", message, restarts, last
                ),
            )
            self.not_before[uid] = time.monotonic() + 1
            return
        workdir = Path(container.get("workingDir") or pod_dir / "home")
        for directory in (pod_dir, pod_dir / "home", workdir, tmp):
            directory.mkdir(parents=True, exist_ok=True)
        with open(pod_dir / "container.log", "ab") as out:
            proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net={cloudhosts.NETNS_DIR / host.name}",
                    "unshare",
                    "--uts",
                    "sh",
                    "-c",
                    _LAUNCH,
                    "sh",
                    _hostname(meta["name"]),
                    str(workdir),
                    *argv,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started, cid = now_rfc3339(), f"standin://{host.name}/{proc.pid}"
        self.containers[uid] = Container(
            uid, meta["namespace"], meta["name"], host, proc, started, restarts
        )
        threading.Thread(target=self._reap, args=(proc,), daemon=True).start()
        self._update(pod, lambda p: podstatus.running(p, host.ip, started, cid, restarts, last))
        log.info(
            "pod %s/%s started on %s (pid %d): %s",
            meta["namespace"],
            meta["name"],
            host.name,
            proc.pid,
            argv,
        )

    def _secret(self, namespace: str) -> podenv.SecretLookup:
        def lookup(ns: str, name: str) -> dict[str, Any] | None:
            items, _ = self.store.list("secrets", ns)
            return next((s for s in items if s["metadata"]["name"] == name), None)

        return lookup

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        self._wake.set()

    # -- running containers ------------------------------------------------------------------
    def _watch_container(self, c: Container, pod: dict[str, Any] | None) -> None:
        code = c.proc.poll()
        deleting = pod is None or bool(pod["metadata"].get("deletionTimestamp"))
        if code is None:
            if pod is None:  # removed at once (grace 0, namespace): kill now
                _signal_group(c.proc, signal.SIGKILL)
                cloudhosts.kill_all(c.host.name)
            elif deleting and c.term_at is None:
                log.info(
                    "pod %s/%s: SIGTERM (grace %ss)",
                    c.namespace,
                    c.name,
                    pod["metadata"].get("deletionGracePeriodSeconds"),
                )
                _signal_group(c.proc, signal.SIGTERM)
                c.term_at = time.monotonic()
            elif c.term_at is not None and time.monotonic() >= c.term_at + _grace(pod):
                log.info("pod %s/%s: grace period over, SIGKILL", c.namespace, c.name)
                _signal_group(c.proc, signal.SIGKILL)
                cloudhosts.kill_all(c.host.name)
            return
        del self.containers[c.uid]
        cloudhosts.kill_all(c.host.name)  # the container's other processes die with it
        container_id = f"standin://{c.host.name}/{c.proc.pid}"
        state = podstatus.terminated_state(code, c.started, container_id)
        log.info("pod %s/%s exited: %s", c.namespace, c.name, state["terminated"])
        if deleting:
            self.store.remove_pod(c.namespace, c.name, c.uid)
            return
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            restarts = c.restarts + 1
            delay = min(300.0, 10.0 * 2 ** (restarts - 1))
            self.restarts[c.uid] = (restarts, state)
            self.not_before[c.uid] = time.monotonic() + delay
            message = f"back-off {delay:.0f}s restarting failed container={c.name}"
            self._update(
                pod, lambda p: podstatus.waiting(p, "CrashLoopBackOff", message, restarts, state)
            )
            return
        self._update(pod, lambda p: podstatus.finished(p, state, c.restarts))


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _grace(pod: dict[str, Any]) -> float:
    """The grace period now in force (a second delete may have shortened it)."""
    return float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)


def _hostname(pod_name: str) -> str:
    """A pod's hostname is its name, cut to the 63 characters a hostname may have."""
    return pod_name[:63].rstrip("-.")
