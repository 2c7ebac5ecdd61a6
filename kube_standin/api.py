"""The HTTP side: core/v1 REST paths as the official client calls them, bearer-token auth, JSON.

``ThreadingHTTPServer`` from the standard library is enough: requests are small, one thread each,
and every state change goes through the store's lock. Plain HTTP only (the stand-in runs inside the
local site's private network namespaces); watches stream newline-delimited JSON events.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import ApiError, bad_request, not_found, unauthorized
from .objects import KINDS
from .selectors import parse_field_selector, parse_selector
from .store import Obj, Store

log = logging.getLogger("kube_standin.api")

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-standin",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}  # every field of a real server's /version: the client's VersionInfo requires them
_PATH = re.compile(
    r"^/api/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[a-z]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>log|status))?)?$"
)
_NAMESPACE = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")
_MAX_BODY = 4 * 1024 * 1024


class ApiServer(ThreadingHTTPServer):
    """The HTTP server plus what handlers need: the store, the token, pod logs and nodes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        store: Store,
        token: str,
        read_log: Callable[[str, str, int | None], str],
        nodes: Callable[[], list[Obj]],
    ) -> None:
        super().__init__(address, Handler)
        self.store, self.token, self.read_log, self.nodes = store, token, read_log, nodes
        self.stopping = threading.Event()


class Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ApiError(413, "request entity too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the request body is not JSON: {exc}") from exc

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in ("/healthz", "/readyz", "/livez"):
                self._send(200, "ok", "text/plain")
                return
            supplied = self.headers.get("Authorization", "")
            if not hmac.compare_digest(supplied.encode(), f"Bearer {self.server.token}".encode()):
                raise unauthorized()
            self._route(method, url.path, query)
        except ApiError as err:
            log.info("%s %s -> %s %s", method, self.path, err.code, err.message)
            self._send(err.code, err.status())
        except BrokenPipeError:
            pass
        except Exception as exc:  # an API server answers 500, it does not die
            log.exception("%s %s failed", method, self.path)
            self._send(500, ApiError(500, f"internal error: {exc}").status())

    do_GET = lambda self: self._dispatch("GET")  # noqa: E731, N815
    do_POST = lambda self: self._dispatch("POST")  # noqa: E731, N815
    do_PATCH = lambda self: self._dispatch("PATCH")  # noqa: E731, N815
    do_DELETE = lambda self: self._dispatch("DELETE")  # noqa: E731, N815
    do_PUT = lambda self: self._dispatch("PUT")  # noqa: E731, N815

    # -- routing -----------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        store = self.server.store
        if method == "GET" and path in ("/version", "/version/"):  # the client asks /version/
            return self._send(200, VERSION)
        if method == "GET" and path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if ns_match := _NAMESPACE.match(path):
            return self._resource(method, "namespaces", None, ns_match.group("name"), query)
        match = _PATH.match(path)
        if not match:
            raise not_found("path", path)
        resource, namespace, name = match.group("resource"), match.group("ns"), match.group("name")
        if resource == "nodes" and namespace is None and method == "GET":
            return self._nodes(name)
        if resource not in KINDS or resource == "namespaces":
            raise not_found("resource", resource)
        if match.group("sub") == "log" and resource == "pods" and method == "GET":
            store.get("pods", namespace, name)
            tail = int(query["tailLines"]) if "tailLines" in query else None
            return self._send(
                200, self.server.read_log(namespace or "", name or "", tail), "text/plain"
            )
        if match.group("sub") == "status" and method != "GET":
            raise ApiError(405, "the stand-in does not take status writes from clients")
        return self._resource(method, resource, namespace, name, query)

    def _resource(
        self,
        method: str,
        resource: str,
        namespace: str | None,
        name: str | None,
        query: dict[str, str],
    ) -> None:
        store, kind = self.server.store, KINDS[resource][0]
        if name is None:
            if method == "GET" and query.get("watch") in ("true", "1"):
                return self._watch(resource, namespace, query)
            if method == "GET":
                items, rv = store.list(
                    resource, namespace, query.get("labelSelector"), query.get("fieldSelector")
                )
                return self._send(200, _list(kind, items, rv))
            if method == "POST":
                return self._send(201, store.create(resource, namespace, self._body()))
            if method == "DELETE" and namespace is not None:
                grace = _grace(query, self._body())
                items, rv = store.delete_collection(
                    resource,
                    namespace,
                    query.get("labelSelector"),
                    grace,
                    query.get("fieldSelector"),
                )
                return self._send(200, _list(kind, items, rv))
            raise ApiError(405, f"{method} is not supported on {resource} lists by the stand-in")
        if method == "GET":
            return self._send(200, store.get(resource, namespace, name))
        if method == "PATCH":
            content_type = self.headers.get("Content-Type", "")
            return self._send(
                200, store.patch(resource, namespace, name, content_type, self._body())
            )
        if method == "DELETE":
            deleted = store.delete(resource, namespace, name, _grace(query, self._body()))
            if resource in ("secrets", "namespaces") and not deleted["metadata"].get(
                "deletionTimestamp"
            ):
                return self._send(200, _success(resource, deleted))
            return self._send(200, deleted)
        raise ApiError(405, f"{method} is not supported on {resource} by the stand-in (use PATCH)")

    def _nodes(self, name: str | None) -> None:
        nodes = self.server.nodes()
        if name is None:
            return self._send(200, _list("Node", nodes, "0"))
        for node in nodes:
            if node["metadata"]["name"] == name:
                return self._send(200, node)
        raise not_found("nodes", name)

    # -- watches -----------------------------------------------------------------------------
    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, resource: str, namespace: str | None, query: dict[str, str]) -> None:
        """Stream ADDED/MODIFIED/DELETED events until ``timeoutSeconds`` or server shutdown."""
        store, match = self.server.store, parse_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"))
        timeout = min(float(query.get("timeoutSeconds") or 1800), 3600)
        start = query.get("resourceVersion")
        initial: list[Obj] = []
        if start in (None, "", "0"):
            initial, start = store.list(
                resource, namespace, query.get("labelSelector"), query.get("fieldSelector")
            )
        since = int(start or 0)
        store.wait_events(resource, namespace, since, 0)  # 410 before any byte is sent
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        try:
            for obj in initial:
                self._chunk({"type": "ADDED", "object": obj})
            while not self.server.stopping.is_set() and time.monotonic() < deadline:
                wait = min(2.0, deadline - time.monotonic())
                try:
                    events, since = store.wait_events(resource, namespace, since, wait)
                except ApiError as err:
                    self._chunk({"type": "ERROR", "object": err.status()})
                    break
                for _rv, kind, _res, _ns, obj in events:
                    if match(obj["metadata"].get("labels") or {}) and fields(obj):
                        self._chunk({"type": kind, "object": obj})
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            log.debug("watch client went away")
        self.close_connection = True


def _list(kind: str, items: list[Obj], rv: str) -> dict[str, Any]:
    for item in items:  # list items carry no kind/apiVersion in a real API server's answer
        item.pop("kind", None)
        item.pop("apiVersion", None)
    return {
        "kind": f"{kind}List",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv},
        "items": items,
    }


def _success(resource: str, obj: Obj) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": meta["name"], "kind": resource, "uid": meta["uid"]},
    }


def _grace(query: dict[str, str], body: Any) -> int | None:
    """gracePeriodSeconds from the query or a DeleteOptions body (the client may send either)."""
    value = query.get("gracePeriodSeconds")
    if value is None and isinstance(body, dict):
        value = body.get("gracePeriodSeconds")
    if value is None:
        return None
    try:
        return max(0, int(value))
    except (TypeError, ValueError) as exc:
        raise bad_request(f"invalid gracePeriodSeconds {value!r}") from exc
