"""The API surface with the official client: CRUD, selectors, patches, errors, quota, watches.

Pods here are pinned to a node label no cloud host has, so they stay Pending and run nothing.
"""

from __future__ import annotations

import json

import pytest
from kst_helpers import Standin, gone, pod
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NOWHERE = {"pool": "nowhere"}  # no cloud host has this label


def parked(name: str, labels: dict[str, str] | None = None, cpu: str | None = None) -> client.V1Pod:
    container = {"resources": client.V1ResourceRequirements(requests={"cpu": cpu})} if cpu else {}
    return pod(name, ["sleep", "1"], labels=labels, node_selector=NOWHERE, container=container)


def error(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_namespace_get_and_404(v1: client.CoreV1Api) -> None:
    assert v1.read_namespace("default").status.phase == "Active"
    with pytest.raises(ApiException) as exc:
        v1.read_namespace("no-such-ns")
    assert exc.value.status == 404
    assert error(exc.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_secret("no-such-ns", client.V1Secret(metadata={"name": "s"}))
    assert exc.value.status == 404
    assert error(exc.value)["message"] == 'namespaces "no-such-ns" not found'


def test_secret_crud(v1: client.CoreV1Api, ns: str) -> None:
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name="token", labels={"ray-cluster": "c1"}),
        string_data={"token": "s3cret"},
    )
    created = v1.create_namespaced_secret(ns, body)
    assert created.data == {"token": "czNjcmV0"} and created.string_data is None
    assert created.type == "Opaque" and created.metadata.uid and created.metadata.creation_timestamp
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_secret(ns, body)
    assert exc.value.status == 409
    assert error(exc.value) | {"details": None} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'secrets "token" already exists', "reason": "AlreadyExists", "code": 409,
        "details": None,
    }  # fmt: skip
    assert v1.read_namespaced_secret("token", ns).data["token"] == "czNjcmV0"  # noqa: S105
    assert [
        s.metadata.name
        for s in v1.list_namespaced_secret(ns, label_selector="ray-cluster=c1").items
    ] == ["token"]
    assert v1.list_namespaced_secret(ns, label_selector="ray-cluster=c2").items == []
    status = v1.delete_namespaced_secret("token", ns)
    assert status["status"] == "Success"
    assert gone(lambda: v1.read_namespaced_secret("token", ns))
    with pytest.raises(ApiException) as exc:
        v1.delete_namespaced_secret("token", ns)
    assert exc.value.status == 404


def test_service_crud(v1: client.CoreV1Api, ns: str) -> None:
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name="head", labels={"app": "ray"}),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=6379, name="gcs")]),
    )
    created = v1.create_namespaced_service(ns, svc)
    assert created.spec.cluster_ip.startswith("10.96.") and created.spec.ports[0].protocol == "TCP"
    assert [
        s.metadata.name for s in v1.list_namespaced_service(ns, label_selector="app").items
    ] == ["head"]
    assert v1.delete_namespaced_service("head", ns).metadata.name == "head"
    assert gone(lambda: v1.read_namespaced_service("head", ns))
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_service(ns, client.V1Service(metadata={"name": "bad"}, spec={}))
    assert exc.value.status == 422
    assert error(exc.value)["details"]["causes"][0]["field"] == "spec.ports"


def test_pod_identity_and_versions(v1: client.CoreV1Api, ns: str) -> None:
    created = v1.create_namespaced_pod(ns, parked("a"))
    assert created.status.phase == "Pending" and created.metadata.namespace == ns
    assert (
        created.spec.restart_policy == "Never"
        and created.spec.termination_grace_period_seconds == 30
    )
    rv = int(created.metadata.resource_version)
    patched = v1.patch_namespaced_pod("a", ns, {"metadata": {"labels": {"x": "1"}}})
    assert int(patched.metadata.resource_version) > rv
    assert patched.metadata.uid == created.metadata.uid
    assert patched.metadata.creation_timestamp == created.metadata.creation_timestamp
    listed = v1.list_namespaced_pod(ns)
    assert int(listed.metadata.resource_version) >= int(patched.metadata.resource_version)
    stale = {"metadata": {"resourceVersion": str(rv), "labels": {"x": "2"}}}
    with pytest.raises(ApiException) as exc:
        v1.patch_namespaced_pod("a", ns, stale)
    assert exc.value.status == 409 and error(exc.value)["reason"] == "Conflict"
    generated = v1.create_namespaced_pod(
        ns, client.V1Pod(metadata=client.V1ObjectMeta(generate_name="w-"), spec=parked("x").spec)
    )
    assert generated.metadata.name.startswith("w-") and len(generated.metadata.name) == 7


SELECTOR_CASES = [
    ("app=ray", {"p1", "p2", "p3"}),
    ("app==ray,kind=worker", {"p2", "p3"}),
    ("kind!=worker", {"p1", "p4"}),
    ("type in (cpu, gpu)", {"p2", "p3"}),
    ("app=ray,type in (gpu)", {"p3"}),
    ("type notin (gpu)", {"p1", "p2", "p4"}),
    ("type", {"p2", "p3"}),
    ("!type", {"p1", "p4"}),
    ("app=ray,!type", {"p1"}),
    ("", {"p1", "p2", "p3", "p4"}),
]


def test_label_selectors(v1: client.CoreV1Api, ns: str) -> None:
    labels = {
        "p1": {"app": "ray", "kind": "head"},
        "p2": {"app": "ray", "kind": "worker", "type": "cpu"},
        "p3": {"app": "ray", "kind": "worker", "type": "gpu"},
        "p4": {"app": "other"},
    }
    for name, value in labels.items():
        v1.create_namespaced_pod(ns, parked(name, value))
    for selector, expected in SELECTOR_CASES:
        found = {p.metadata.name for p in v1.list_namespaced_pod(ns, label_selector=selector).items}
        assert found == expected, selector
    across = v1.list_pod_for_all_namespaces(label_selector="kind=head").items
    assert [(p.metadata.namespace, p.metadata.name) for p in across] == [(ns, "p1")]
    by_field = v1.list_namespaced_pod(ns, field_selector="metadata.name!=p1,status.phase=Pending")
    assert {p.metadata.name for p in by_field.items} == {"p2", "p3", "p4"}
    with pytest.raises(ApiException) as exc:
        v1.list_namespaced_pod(ns, label_selector="type in (cpu")
    assert exc.value.status == 400


def test_patch_flavours(v1: client.CoreV1Api, ns: str) -> None:
    v1.create_namespaced_pod(ns, parked("p", {"a": "1", "b": "2"}))
    strategic = v1.patch_namespaced_pod("p", ns, {"metadata": {"labels": {"b": None, "c": "3"}}})
    assert strategic.metadata.labels == {"a": "1", "c": "3"}
    merge = v1.patch_namespaced_pod(
        "p", ns, {"metadata": {"labels": {"d": "4"}}}, _content_type="application/merge-patch+json"
    )
    assert merge.metadata.labels == {"a": "1", "c": "3", "d": "4"}
    ops = [{"op": "replace", "path": "/metadata/labels/a", "value": "9"},
           {"op": "remove", "path": "/metadata/labels/c"}]  # fmt: skip
    assert v1.patch_namespaced_pod("p", ns, ops).metadata.labels == {"a": "9", "d": "4"}
    with pytest.raises(ApiException) as exc:
        v1.patch_namespaced_pod("p", ns, {"spec": {"restartPolicy": "Always"}})
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        v1.patch_namespaced_pod("missing", ns, {"metadata": {"labels": {"a": "1"}}})
    assert exc.value.status == 404


def test_delete_pod_and_collection(v1: client.CoreV1Api, ns: str) -> None:
    for name, kind in (("h", "head"), ("w1", "worker"), ("w2", "worker")):
        v1.create_namespaced_pod(ns, parked(name, {"kind": kind}))
    deleted = v1.delete_namespaced_pod("h", ns, grace_period_seconds=30)
    assert deleted.metadata.name == "h" and deleted.metadata.deletion_timestamp is not None
    assert gone(lambda: v1.read_namespaced_pod("h", ns))  # never scheduled: removed at once
    v1.create_namespaced_pod(ns, parked("other", {"kind": "other"}))
    v1.delete_collection_namespaced_pod(ns, label_selector="kind=worker")
    assert [p.metadata.name for p in v1.list_namespaced_pod(ns).items] == ["other"]


def test_invalid_objects_422(v1: client.CoreV1Api, ns: str) -> None:
    empty = client.V1Pod(metadata={"name": "empty"}, spec=client.V1PodSpec(containers=[]))
    cases = [
        (empty, "spec.containers"),
        (pod("noimage", ["true"], image=""), "spec.containers[0].image"),
        (pod("Bad_Name", ["true"]), "metadata.name"),
        (pod("cpu", ["true"], container={"resources": {"requests": {"cpu": "lots"}}}),
         "spec.containers[0].resources.requests[cpu]"),
    ]  # fmt: skip
    for body, field in cases:
        with pytest.raises(ApiException) as exc:
            v1.create_namespaced_pod(ns, body)
        assert exc.value.status == 422, field
        status = error(exc.value)
        assert status["reason"] == "Invalid" and " is invalid: " in status["message"]
        assert field in [c["field"] for c in status["details"]["causes"]]


def test_unauthorized_401(standin: Standin) -> None:
    for token in (None, "wrong-token"):
        cfg = client.Configuration(host=standin.url)
        if token:
            cfg.api_key = {"BearerToken": f"Bearer {token}"}
        with pytest.raises(ApiException) as exc:
            client.CoreV1Api(client.ApiClient(cfg)).list_namespaced_pod("default")
        assert exc.value.status == 401
        assert json.loads(exc.value.body)["reason"] == "Unauthorized"
    good = client.CoreV1Api(config.new_client_from_config(config_file=str(standin.kubeconfig)))
    assert good.list_namespaced_pod("default").kind == "PodList"


def test_quota_403(v1: client.CoreV1Api, ns: str) -> None:
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="burst"),
        spec=client.V1ResourceQuotaSpec(hard={"pods": "2", "requests.cpu": "3"}),
    )
    v1.create_namespaced_resource_quota(ns, quota)
    v1.create_namespaced_pod(ns, parked("a", cpu="2"))
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_pod(ns, parked("b", cpu="2"))
    assert exc.value.status == 403
    status = error(exc.value)
    assert status["reason"] == "Forbidden"
    assert status["message"] == (
        'pods "b" is forbidden: exceeded quota: burst, requested: requests.cpu=2, '
        "used: requests.cpu=2, limited: requests.cpu=3"
    )
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_pod(ns, parked("c"))
    assert exc.value.status == 403
    assert "failed quota: burst: must specify requests.cpu" in error(exc.value)["message"]
    v1.create_namespaced_pod(ns, parked("d", cpu="500m"))
    with pytest.raises(ApiException) as exc:
        v1.create_namespaced_pod(ns, parked("e", cpu="100m"))
    assert (
        "exceeded quota: burst, requested: pods=1, used: pods=2, limited: pods=2"
        in error(exc.value)["message"]
    )
    used = v1.read_namespaced_resource_quota("burst", ns).status.used
    assert used == {"pods": "2", "requests.cpu": "2500m"}
    v1.delete_namespaced_pod("a", ns)
    v1.create_namespaced_pod(ns, parked("e", cpu="100m"))  # room again


def test_watch_pods(v1: client.CoreV1Api, ns: str) -> None:
    start = v1.list_namespaced_pod(ns).metadata.resource_version
    v1.create_namespaced_pod(ns, parked("w", {"k": "v"}))
    v1.patch_namespaced_pod("w", ns, {"metadata": {"labels": {"k2": "v2"}}})
    v1.delete_namespaced_pod("w", ns)
    stream = watch.Watch().stream(
        v1.list_namespaced_pod, ns, resource_version=start, timeout_seconds=2
    )
    events = [(e["type"], e["object"].metadata.labels) for e in stream]
    assert events[0] == ("ADDED", {"k": "v"})
    assert ("MODIFIED", {"k": "v", "k2": "v2"}) in events  # (the scheduler's updates too)
    assert events[-1][0] == "DELETED"
