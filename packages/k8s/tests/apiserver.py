"""A small Kubernetes API server for the deploy tests: a real HTTP server on 127.0.0.1 that
speaks enough of the API for discovery, server-side apply, get, list by label and delete,
keeps the objects in memory and records every request the kubernetes client sends."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

#: group/version → (plural, kind, namespaced). No monitoring.coreos.com: that operator is
#: "not installed" here, as on many clusters.
RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True), ("deployments/scale", "Scale", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "keda.sh/v1alpha1": [
        ("scaledobjects", "ScaledObject", True),
        ("triggerauthentications", "TriggerAuthentication", True),
    ],
}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    authorization: str | None
    body: Any


@dataclass
class FakeCluster:
    calls: list[Call] = field(default_factory=list)
    #: (group/version, plural, namespace, name) → object
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        for obj in self.objects.values():
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        return None


def _parse(path: str) -> tuple[str, str | None, str | None, str | None] | None:
    """``/apis/apps/v1/namespaces/ns/deployments/name`` → (apps/v1, ns, plural, name)."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 2:
        gv, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":  # /namespaces/<ns> alone is a Namespace
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    return gv, namespace, plural, name


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _handler(state: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, what: str) -> None:
            self._send(404, {"kind": "Status", "status": "Failure", "reason": "NotFound",
                             "message": f"{what} not found", "code": 404})  # fmt: skip

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = yaml.safe_load(raw) if raw else None
            with state.lock:
                state.calls.append(
                    Call(
                        method,
                        url.path,
                        query,
                        self.headers.get("Content-Type"),
                        self.headers.get("Authorization"),
                        body,
                    )
                )
                self._answer(method, url.path, query, body)

        def _answer(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
            parsed = _parse(path)
            if parsed is None:
                return self._not_found(path)
            gv, namespace, plural, name = parsed
            if gv not in RESOURCES:
                return self._not_found(f"the server could not find {gv}")
            if plural is None and method == "GET":
                return self._send(200, {
                    "kind": "APIResourceList", "groupVersion": gv,
                    "resources": [{"name": p, "kind": k, "namespaced": n, "verbs": []}
                                  for p, k, n in RESOURCES[gv]],
                })  # fmt: skip
            kind = {p: k for p, k, _ in RESOURCES[gv]}.get(plural or "")
            if kind is None:
                return self._not_found(f"{gv} {plural}")
            key = (gv, plural or "", namespace or "", name or "")
            if method == "PATCH" and name:
                if self.headers.get("Content-Type") != "application/apply-patch+yaml":
                    return self._send(415, {"kind": "Status", "message": "unsupported"})
                if not query.get("fieldManager"):
                    return self._send(422, {"kind": "Status", "message": "fieldManager required"})
                old = state.objects.get(key)
                obj = dict(body)
                if old is not None and "status" in old:
                    obj["status"] = old["status"]
                state.objects[key] = obj
                return self._send(201 if old is None else 200, obj)
            if method == "GET" and name:
                found = state.objects.get(key)
                return self._send(200, found) if found else self._not_found(name)
            if method == "GET":
                selector = query.get("labelSelector", "")
                items = [
                    {k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
                    for (g, p, ns, _), o in sorted(state.objects.items())
                    if (g, p, ns) == (gv, plural, namespace or "")
                    and _matches(o["metadata"].get("labels", {}), selector)
                ]
                return self._send(200, {"kind": f"{kind}List", "items": items})
            if method == "DELETE" and name:
                if state.objects.pop(key, None) is None:
                    return self._not_found(name)
                return self._send(200, {"kind": "Status", "status": "Success"})
            return self._send(405, {"kind": "Status", "message": f"{method} not served"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


@contextmanager
def api_server(tmp_path: Path) -> Iterator[tuple[FakeCluster, Path]]:
    """Serve on a free port; yield the state and a kubeconfig that points at it."""
    state = FakeCluster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    host, port = str(server.server_address[0]), int(server.server_address[1])
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": f"http://{host}:{port}"}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    try:
        yield state, kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
