"""The object store: every stored object, its resourceVersion, uid and timestamps, and the event
log that watches read.

One lock guards everything, so quota admission sees a consistent namespace and resourceVersions
increase strictly (one counter for all kinds, as etcd's revision). Pods are not removed at once
when deleted while their process may run: they get ``deletionTimestamp`` and the runner removes
them when the process is gone, as a kubelet would.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from . import objects, quota
from .errors import ApiError, already_exists, conflict, forbidden, not_found
from .patch import apply_patch
from .selectors import parse_field_selector, parse_selector

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
Event = tuple[int, str, str, str, Obj]  # (resourceVersion, type, resource, namespace, object)


def now_rfc3339(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """In-memory objects by resource, namespace and name; thread-safe."""

    def __init__(self, namespaces: Iterable[str] = ("default",), event_log: int = 5000) -> None:
        self._cond = threading.Condition()
        self._objects: dict[str, dict[Key, Obj]] = {r: {} for r in objects.KINDS}
        self._rv = 0
        self._events: deque[Event] = deque(maxlen=event_log)
        self._listeners: list[Callable[[], None]] = []
        for name in namespaces:
            self.create("namespaces", None, {"metadata": {"name": name}})

    # -- internals (caller holds the lock) ---------------------------------------------------
    def _bump(self, resource: str, event: str, obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        namespace = obj["metadata"].get("namespace", "")
        self._events.append((self._rv, event, resource, namespace, copy.deepcopy(obj)))
        self._cond.notify_all()
        for listener in self._listeners:
            listener()

    def _find(self, resource: str, namespace: str | None, name: str) -> Obj:
        obj = self._objects[resource].get((namespace or "", name))
        if obj is None:
            raise not_found(resource, name)
        return obj

    def _check_namespace(self, namespace: str | None, creating: bool = False) -> None:
        if namespace is None:
            return
        ns = self._objects["namespaces"].get(("", namespace))
        if ns is None:
            raise not_found("namespaces", namespace)
        if creating and ns["status"]["phase"] == "Terminating":
            raise forbidden(
                "namespaces",
                namespace,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def _in_namespace(self, resource: str, namespace: str) -> list[Obj]:
        return [o for (ns, _), o in self._objects[resource].items() if ns == namespace]

    def _usage(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {
            r: quota.used(r, self._in_namespace(r, namespace))
            for r in ("pods", "secrets", "services")
        }

    def _with_quota_status(self, resource: str, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        if resource == "resourcequotas":
            out["status"] = quota.quota_status(obj, self._usage(obj["metadata"]["namespace"]))
        return out

    def _remove(self, resource: str, obj: Obj) -> None:
        meta = obj["metadata"]
        del self._objects[resource][(meta.get("namespace", ""), meta["name"])]
        self._bump(resource, "DELETED", obj)
        namespace = meta.get("namespace")
        if namespace:
            self._finish_namespace(namespace)

    def _finish_namespace(self, namespace: str) -> None:
        ns = self._objects["namespaces"].get(("", namespace))
        if ns is None or ns["status"]["phase"] != "Terminating":
            return
        if not any(self._in_namespace(r, namespace) for r in objects.KINDS if r != "namespaces"):
            self._remove("namespaces", ns)

    # -- API operations ----------------------------------------------------------------------
    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called (under the lock: keep it short) after every change; wakes the pod runner."""
        self._listeners.append(listener)

    def create(self, resource: str, namespace: str | None, body: Any) -> Obj:
        body = copy.deepcopy(body)
        meta = objects.prepare_metadata(body, resource, namespace)
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(key, None)
        objects.validate_create(resource, body)
        with self._cond:
            self._check_namespace(namespace, creating=True)
            key = (namespace or "", meta["name"])
            if key in self._objects[resource]:
                raise already_exists(resource, meta["name"])
            if resource in ("pods", "secrets", "services"):
                quotas = self._in_namespace("resourcequotas", namespace or "")
                current = quota.used(resource, self._in_namespace(resource, namespace or ""))
                quota.admit(resource, body, quotas, current)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            self._objects[resource][key] = body
            self._bump(resource, "ADDED", body)
            return self._with_quota_status(resource, body)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj:
        with self._cond:
            self._check_namespace(namespace)
            return self._with_quota_status(resource, self._find(resource, namespace, name))

    def list(
        self,
        resource: str,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        """Matching objects sorted by namespace and name, and the list's resourceVersion."""
        match, fields = parse_selector(label_selector), parse_field_selector(field_selector)
        with self._cond:
            if namespace is not None:
                self._check_namespace(namespace)
            items = [
                self._with_quota_status(resource, obj)
                for (ns, _name), obj in sorted(self._objects[resource].items())
                if (namespace is None or ns == namespace)
                and match(obj["metadata"].get("labels") or {})
                and fields(obj)
            ]
            return items, str(self._rv)

    def patch(
        self, resource: str, namespace: str | None, name: str, content_type: str, body: Any
    ) -> Obj:
        with self._cond:
            old = self._find(resource, namespace, name)
            new = apply_patch(old, content_type, body)
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise ApiError(422, f"patched {resource} {name!r} is not an object")
            wanted = new["metadata"].get("resourceVersion")
            if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(resource, name)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if resource in ("pods", "services", "namespaces"):
                new["status"] = copy.deepcopy(old.get("status"))  # status is a subresource
            objects.validate_update(resource, old, new)
            if new == old:
                return self._with_quota_status(resource, old)
            self._objects[resource][(namespace or "", name)] = new
            self._bump(resource, "MODIFIED", new)
            return self._with_quota_status(resource, new)

    def delete(
        self, resource: str, namespace: str | None, name: str, grace: int | None = None
    ) -> Obj:
        """Delete now, or (pods bound to a host and still running) mark for graceful deletion."""
        with self._cond:
            obj = self._find(resource, namespace, name)
            if resource == "namespaces":
                return self._delete_namespace(obj)
            if resource == "pods":
                return self._delete_pod(obj, grace)
            self._remove(resource, obj)
            return copy.deepcopy(obj)

    def _delete_pod(self, pod: Obj, grace: int | None) -> Obj:
        meta = pod["metadata"]
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        phase = pod.get("status", {}).get("phase")
        if grace <= 0 or not pod["spec"].get("nodeName") or phase in quota.TERMINAL:
            meta.setdefault("deletionTimestamp", now_rfc3339())
            meta["deletionGracePeriodSeconds"] = 0
            self._remove("pods", pod)
            return copy.deepcopy(pod)
        current = meta.get("deletionGracePeriodSeconds")
        if current is None or grace < current:  # a second delete may only shorten the grace
            meta["deletionTimestamp"] = now_rfc3339(time.time() + grace)
            meta["deletionGracePeriodSeconds"] = grace
            self._bump("pods", "MODIFIED", pod)
        return copy.deepcopy(pod)

    def _delete_namespace(self, ns: Obj) -> Obj:
        name = ns["metadata"]["name"]
        if ns["status"]["phase"] != "Terminating":
            ns["status"]["phase"] = "Terminating"
            ns["metadata"]["deletionTimestamp"] = now_rfc3339()
            self._bump("namespaces", "MODIFIED", ns)
        for resource in objects.KINDS:
            if resource != "namespaces":
                for obj in self._in_namespace(resource, name):
                    self.delete(resource, name, obj["metadata"]["name"])
        self._finish_namespace(name)
        return copy.deepcopy(ns)

    def delete_collection(
        self,
        resource: str,
        namespace: str | None,
        label_selector: str | None,
        grace: int | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        with self._cond:
            items, _ = self.list(resource, namespace, label_selector, field_selector)
            deleted = [
                self.delete(resource, namespace, o["metadata"]["name"], grace) for o in items
            ]
            return deleted, str(self._rv)

    # -- for the pod runner ------------------------------------------------------------------
    def snapshot(self, resource: str) -> list[Obj]:
        """Copies of every object of a kind, oldest first (the scheduler's queue order)."""
        with self._cond:  # dicts keep insertion order, and a patch keeps an object's place
            return [copy.deepcopy(o) for o in self._objects[resource].values()]

    def update_status(
        self, namespace: str, name: str, uid: str, mutate: Callable[[Obj], None]
    ) -> bool:
        """Let the runner change a pod (status, nodeName); False if that pod (uid) is gone."""
        with self._cond:
            pod = self._objects["pods"].get((namespace, name))
            if pod is None or pod["metadata"]["uid"] != uid:
                return False
            before = copy.deepcopy(pod)
            mutate(pod)
            if pod != before:
                self._bump("pods", "MODIFIED", pod)
            return True

    def remove_pod(self, namespace: str, name: str, uid: str) -> None:
        """Final removal of a pod whose process is gone."""
        with self._cond:
            pod = self._objects["pods"].get((namespace, name))
            if pod is not None and pod["metadata"]["uid"] == uid:
                self._remove("pods", pod)

    # -- watches -----------------------------------------------------------------------------
    def wait_events(
        self, resource: str, namespace: str | None, since: int, timeout: float
    ) -> tuple[list[Event], int]:
        """Events of a kind after resourceVersion ``since``, waiting up to ``timeout`` for one.

        410 Gone when ``since`` is older than the event log, as a compacted etcd answers.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._events and since < self._events[0][0] - 1:
                    raise ApiError(410, f"too old resource version: {since}", reason="Expired")
                found = [
                    e
                    for e in self._events
                    if e[0] > since
                    and e[2] == resource
                    and (namespace is None or e[3] == namespace)
                ]
                last = self._events[-1][0] if self._events else since
                if found or time.monotonic() >= deadline:
                    return found, max(since, last)
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
