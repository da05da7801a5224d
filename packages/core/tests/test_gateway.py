"""The gateway as a real process (``python -m chute gateway``) on a real SQLite file, driven
over real HTTP. The store and queue are read back through their own APIs on the same file."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from gateway_support import queued, run
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from chute import open_store
from chute.backends.base import DEFAULT_RETENTION
from chute.gateway._server import SERVERS
from chute.protocol import ErrorInfo, RequestRecord, Status
from chute.testing.gateway import GatewayProcess, gateway_process
from chute.testing.http import http

MAX_BODY = 25 * 1024 * 1024
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture(scope="module")
def gateway(api_file: Path, db_url: str) -> Iterator[GatewayProcess]:
    with gateway_process(
        api_file, queue_url=db_url, store_url=db_url, args=["--max-body-size", "25MiB"]
    ) as running:
        yield running
    assert running.returncode == 0


def stored(db_url: str, api: str, request_id: str) -> tuple[RequestRecord | None, bytes]:
    async def read() -> tuple[RequestRecord | None, bytes]:
        async with open_store(db_url) as store:
            record = await store.get(api, request_id)
            body = b""
            if record is not None:
                body = b"".join([chunk async for chunk in store.payload(api, request_id)])
            return record, body

    result: tuple[RequestRecord | None, bytes] = run(read)
    return result


def finish(db_url: str, api: str, request_id: str, to: Status, **kwargs: Any) -> None:
    async def move() -> None:
        async with open_store(db_url) as store:
            await store.transition(api, request_id, Status.IN_PROGRESS, attempt=1)
            await store.transition(api, request_id, to, attempt=1, **kwargs)

    run(move)


def assert_error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    assert body["error"]["message"]
    return body


# -- submit ---------------------------------------------------------------------------------


def test_submit_stores_body_content_type_and_headers(http: httpx.Client, db_url: str) -> None:
    before = queued(db_url, "hello")
    response = http.post(
        "/hello",
        content=b"a,b\n1,2\n",
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "X-Trace": "abc",
            "Authorization": "Bearer t",
            "Connection": "keep-alive",
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["id"]  # Cortex's shape, nothing more
    assert uuid.UUID(body["id"]).version == 7  # a UUID, as Cortex's ids were
    record, payload = stored(db_url, "hello", body["id"])
    assert record is not None
    assert record.status is Status.IN_QUEUE
    assert record.api == "hello"
    assert payload == b"a,b\n1,2\n"
    assert record.payload_size == len(payload)
    assert record.content_type == "text/csv; charset=utf-8"
    headers = dict(record.headers)
    assert headers["x-trace"] == "abc"
    assert headers["authorization"] == "Bearer t"
    for dropped in ("content-type", "content-length", "host", "connection"):
        assert dropped not in headers
    assert record.expires_at - record.created_at == pytest.approx(DEFAULT_RETENTION)
    assert queued(db_url, "hello") == before + 1


def test_submit_with_trailing_slash_and_custom_endpoint(http: httpx.Client, db_url: str) -> None:
    for path, api in (("/hello/", "hello"), ("/v1/other", "other"), ("/v1/other/", "other")):
        response = http.post(path, json={"n": 1})
        assert response.status_code == 200, response.text
        record, payload = stored(db_url, api, response.json()["id"])
        assert record is not None
        assert msgspec.json.decode(payload) == {"n": 1}


def test_submit_without_body_or_content_type(http: httpx.Client, db_url: str) -> None:
    response = http.post("/hello")
    assert response.status_code == 200
    record, payload = stored(db_url, "hello", response.json()["id"])
    assert record is not None
    assert record.content_type is None
    assert payload == b""


def test_a_20_mib_body_is_streamed_into_the_store(http: httpx.Client, db_url: str) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256(chunk * 20).hexdigest()

    def body() -> Iterator[bytes]:
        for _ in range(20):
            yield chunk  # no Content-Length: chunked transfer encoding

    response = http.post("/hello", content=body(), headers={"Content-Type": "application/x-bin"})
    assert response.status_code == 200, response.text
    record, payload = stored(db_url, "hello", response.json()["id"])
    assert record is not None
    assert record.payload_size == 20 * len(chunk)
    assert hashlib.sha256(payload).hexdigest() == digest


#: Every ASGI server the gateway runs on (the default first): the early 413 and the graceful
#: drain are checked on each. granian is optional (the ``bench`` group installs it).
ON_EVERY_SERVER = pytest.mark.parametrize(
    "server",
    [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                importlib.util.find_spec(name) is None, reason=f"{name} is not installed"
            ),
        )
        for name in SERVERS
    ],
)


@contextlib.contextmanager
def served_by(server: str, api_file: Path, url: str) -> Iterator[GatewayProcess]:
    args = ["--max-body-size", "25MiB", "--server", server]
    with gateway_process(api_file, queue_url=url, store_url=url, args=args) as running:
        yield running
    assert running.returncode == 0


@ON_EVERY_SERVER
def test_413_from_content_length_before_any_body_is_sent(
    server: str, api_file: Path, db_url: str
) -> None:
    # A raw socket: announce 1 GiB, send no body at all, and still get the answer.
    with served_by(server, api_file, db_url) as gateway:
        head, body = _announce_a_gibibyte(gateway)
    assert head.startswith(b"HTTP/1.1 413")
    error = msgspec.json.decode(body)["error"]
    assert error["type"] == "payload_too_large"
    assert str(MAX_BODY) in error["message"]


def _announce_a_gibibyte(gateway: GatewayProcess) -> tuple[bytes, bytes]:
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


@ON_EVERY_SERVER
def test_413_for_a_chunked_body_that_grows_past_the_limit(
    server: str, api_file: Path, db_url: str
) -> None:
    before = queued(db_url, "hello")

    def body() -> Iterator[bytes]:
        for _ in range(26):
            yield b"x" * (1024 * 1024)

    with served_by(server, api_file, db_url) as gateway:
        response = http().post(f"{gateway.url}/hello", content=body(), timeout=30)
    assert_error(response, 413, "payload_too_large")
    assert queued(db_url, "hello") == before


# -- results --------------------------------------------------------------------------------


def test_get_in_queue(http: httpx.Client) -> None:
    request_id = http.post("/hello", json={}).json()["id"]
    response = http.get(f"/hello/{request_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == request_id
    assert body["status"] == "in_queue"
    assert "result" not in body
    assert "timestamp" not in body
    assert RFC3339.match(body["created_at"])
    assert body["attempts"] == 0


def test_get_completed_has_cortex_shape(http: httpx.Client, db_url: str) -> None:
    request_id = http.post("/hello", json={"q": 1}).json()["id"]
    result = b'{"answer": [1, 2.5, "three"], "nested": {"ok": true}}'
    finish(db_url, "hello", request_id, Status.COMPLETED, result=result)
    response = http.get(f"/hello/{request_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    # Cortex's keys first, in Cortex's order, then chute's extensions.
    assert list(body)[:4] == ["id", "status", "result", "timestamp"]
    assert body["id"] == request_id
    assert body["status"] == "completed"
    assert body["result"] == msgspec.json.decode(result)
    assert b'"result":{"answer": [1, 2.5, "three"]' in response.content  # spliced verbatim
    assert RFC3339.match(body["timestamp"])
    record, _ = stored(db_url, "hello", request_id)
    assert record is not None
    assert record.finished_at is not None
    finished = datetime.fromisoformat(body["timestamp"]).timestamp()
    assert finished == pytest.approx(record.finished_at, abs=0.001)
    assert body["attempts"] == 1
    for key in ("created_at", "started_at", "finished_at"):
        assert RFC3339.match(body[key])
    assert "error" not in body


def test_get_failed_says_why(http: httpx.Client, db_url: str) -> None:
    request_id = http.post("/v1/other", json={}).json()["id"]
    reason = ErrorInfo(
        type="user_container_response_status_code",
        message="got status code 500, expected 200",
        status_code=500,
        body="boom",
    )
    finish(db_url, "other", request_id, Status.FAILED, error=reason)
    body = http.get(f"/v1/other/{request_id}").json()
    assert body["status"] == "failed"
    assert "result" not in body
    assert "timestamp" not in body
    assert body["error"] == {
        "type": "user_container_response_status_code",
        "message": "got status code 500, expected 200",
        "status_code": 500,
        "body": "boom",
    }
    # The trailing slash is accepted on reads too.
    assert http.get(f"/v1/other/{request_id}/").json()["status"] == "failed"


def test_404s(http: httpx.Client) -> None:
    assert_error(http.post("/nope", json={}), 404, "not_found")
    assert_error(http.get("/nope/abc"), 404, "not_found")
    assert_error(http.get("/hello/0123456789abcdef"), 404, "not_found")
    assert_error(http.get("/hello/-not-an-id"), 404, "not_found")
    assert_error(http.get("/hello/a.b"), 404, "not_found")
    # An id of one API is not found under another.
    request_id = http.post("/hello", json={}).json()["id"]
    assert_error(http.get(f"/v1/other/{request_id}"), 404, "not_found")


def test_405_with_allow(http: httpx.Client) -> None:
    response = http.put("/hello", json={})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    response = http.post("/hello/0123456789abcdef", json={})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, DELETE"
    response = http.delete("/healthz")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


def test_415_for_a_content_type_that_is_not_a_media_type(http: httpx.Client) -> None:
    response = http.post("/hello", content=b"x", headers={"Content-Type": "not a type"})
    assert_error(response, 415, "unsupported_media_type")


# -- health, metrics, openapi ---------------------------------------------------------------


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_metrics(http: httpx.Client, db_url: str) -> None:
    http.post("/hello", json={})
    http.get("/hello/0123456789abcdef")
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("chute_gateway_requests_total", api="hello", method="POST", status_code="200")
    assert value("chute_gateway_requests_total", api="hello", method="GET", status_code="404")
    assert value("chute_gateway_request_duration_seconds_count", api="hello", method="POST")
    depth = queued(db_url, "hello")
    assert depth > 0
    assert value("chute_queue_depth", api="hello", state="queued") == depth
    assert value("chute_queue_depth", api="other", state="in_flight") == 0
    assert value("chute_queue_depth", api="hello", state="dead") == 0
    cortex = {"api_name": "hello", "api_kind": "AsyncAPI"}
    assert value("cortex_async_queued", **cortex) == depth
    assert value("cortex_async_active", **cortex) == 0
    assert value("cortex_async_in_flight", **cortex) == depth


def test_openapi_document_is_valid_and_complete(http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/hello",
        "/hello/{request_id}",
        "/hello/{request_id}/result",
        "/v1/other",
        "/v1/other/{request_id}",
        "/v1/other/{request_id}/result",
        "/queues/hello",
        "/queues/other",
        "/healthz",
        "/metrics",
        "/openapi.json",
    }
    submit = document["paths"]["/hello"]["post"]["responses"]
    assert submit["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitResponse"
    }
    assert {"413", "503"} <= set(submit)
    schemas = document["components"]["schemas"]
    assert {"SubmitResponse", "ResultResponse", "ErrorResponse", "ErrorInfo"} <= set(schemas)
    assert "completed" in schemas["ResultResponse"]["properties"]["status"]["enum"]


# -- failure and shutdown -------------------------------------------------------------------


def _blocked(tmp_path: Path) -> tuple[Path, str]:
    """A SQLite URL whose directory cannot be created (a regular file is in the way)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    return blocker, f"sqlite:///{blocker / 'chute.db'}"


def test_503_while_the_store_is_unreachable_then_recovery(tmp_path: Path, api_file: Path) -> None:
    blocker, url = _blocked(tmp_path)
    with (
        gateway_process(api_file, queue_url=url, store_url=url) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as http,
    ):
        response = http.post("/hello", json={})
        assert_error(response, 503, "backend_unavailable")
        assert response.headers["retry-after"] == "1"
        assert_error(http.get("/hello/0123456789abcdef"), 503, "backend_unavailable")
        assert_error(http.get("/healthz"), 503, "backend_unavailable")
        metrics = http.get("/metrics")  # still answers, without queue depth
        assert metrics.status_code == 200
        assert "chute_queue_depth{" not in metrics.text
        blocker.unlink()  # the backend comes back
        assert http.get("/healthz").status_code == 200
        assert http.post("/hello", json={}).status_code == 200
    assert gw.returncode == 0
    assert not any('"level":"error"' in line and "Traceback" in line for line in gw.log)


def test_a_failed_enqueue_leaves_no_record_behind(tmp_path: Path, api_file: Path) -> None:
    _, queue_url = _blocked(tmp_path)
    store_db = tmp_path / "store.db"
    with gateway_process(api_file, queue_url=queue_url, store_url=f"sqlite:///{store_db}") as gw:
        response = http().post(f"{gw.url}/hello", json={"x": 1}, timeout=30)
        assert_error(response, 503, "backend_unavailable")
    with sqlite3.connect(store_db) as db:  # the store did hold it for a moment; not any more
        assert db.execute("SELECT count(*) FROM store_records").fetchone() == (0,)


@ON_EVERY_SERVER
def test_sigterm_finishes_the_in_flight_request_and_exits_0(
    server: str, tmp_path: Path, api_file: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'chute.db'}"
    with gateway_process(api_file, queue_url=url, store_url=url, args=["--server", server]) as gw:

        async def upload() -> httpx.Response:
            async def body() -> AsyncIterator[bytes]:
                yield b'{"part": 1'
                gw.process.terminate()  # SIGTERM while the request is in flight
                await anyio.sleep(0.5)
                yield b', "more": 2}'

            async with httpx.AsyncClient(timeout=30) as client:
                return await client.post(f"{gw.url}/hello", content=body())

        response: httpx.Response = anyio.run(upload)
        assert response.status_code == 200, response.text
        started = time.monotonic()
        assert gw.process.wait(20) == 0
        assert time.monotonic() - started < 20
        with pytest.raises(httpx.ConnectError):
            http().get(f"{gw.url}/healthz")
    record, payload = stored(url, "hello", response.json()["id"])
    assert record is not None
    assert payload == b'{"part": 1, "more": 2}'
    assert any("stopping" in line for line in gw.log)


def test_an_unknown_backend_scheme_fails_at_startup(api_file: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chute",
            "gateway",
            str(api_file),
            "--port",
            "0",
            "--queue",
            "nosuch://x",
            "--store",
            "nosuch://x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3  # a configuration problem (docs/cli.md)
    assert "no queue backend handles nosuch://" in done.stderr
    assert "Traceback" not in done.stderr
