"""The dequeuer processes requests: what reaches the container, what is stored, what is dropped."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from dequeuer_harness import API, Backend, Container, Dequeuer, rss_peak_mib

from chute.protocol import EXTRA_RESULT_TYPE, REQUEST_ID_HEADER, Status

pytestmark = pytest.mark.anyio

StartDequeuer = Callable[..., Dequeuer]


def header(call: dict[str, object], name: str) -> list[str]:
    headers = call["headers"]
    assert isinstance(headers, list)
    return [v for k, v in headers if k.lower() == name.lower()]


async def test_completes_and_forwards_body_and_headers(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    dequeuer = start_dequeuer(container.port)
    body = json.dumps({"text": "héllo", "n": list(range(1000))}).encode()
    rid = await backend.submit(
        body,
        content_type="application/json; charset=utf-8",
        headers=[("X-Custom", "42"), ("Authorization", "Bearer t0k3n"), ("X-Custom", "43")],
    )

    record = await backend.wait_status(rid, Status.COMPLETED, Status.FAILED)

    assert record.status is Status.COMPLETED, record.error
    assert record.attempt == 1
    assert record.started_at is not None
    assert record.finished_at is not None
    result = await backend.store.result(API, rid)
    assert result is not None
    assert json.loads(result) == {
        "body": body.decode(),
        "content_type": "application/json; charset=utf-8",
    }
    (call,) = container.calls(rid)
    assert base64.b64decode(call["body_b64"]) == body
    assert header(call, "Content-Type") == ["application/json; charset=utf-8"]
    assert header(call, REQUEST_ID_HEADER) == [rid]
    assert header(call, "X-Custom") == ["42", "43"]
    assert header(call, "Authorization") == ["Bearer t0k3n"]
    assert header(call, "User-Agent") == ["test-client"]
    assert header(call, "Content-Length") == [str(len(body))]
    # The message is gone once the outcome is stored.
    depth = await backend.queue.depth(API)
    assert (depth.queued, depth.in_flight) == (0, 0)
    # Every log line about the request names it.
    done = dequeuer.wait_log("request completed", request_id=rid)
    assert (done["api"], done["attempt"], done["status_code"]) == (API, 1, 200)
    assert dequeuer.wait_log("processing request")["request_id"] == rid


async def test_binary_and_empty_payloads_are_sent_as_stored(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    start_dequeuer(container.port)
    blob = bytes(range(256)) * 1000
    rid_blob = await backend.submit(blob, content_type="application/octet-stream")
    rid_empty = await backend.submit(b"", content_type=None)
    rid_charset = await backend.submit(b"{}", headers=[("X-Behaviour", "charset")])

    for rid in (rid_blob, rid_empty, rid_charset):
        record = await backend.wait_status(rid, Status.COMPLETED, Status.FAILED)
        assert record.status is Status.COMPLETED, record.error

    (call,) = container.calls(rid_blob)
    assert base64.b64decode(call["body_b64"]) == blob
    assert header(call, "Content-Type") == ["application/octet-stream"]
    (call,) = container.calls(rid_empty)
    assert call["body_b64"] == ""
    assert header(call, "Content-Type") == []


async def test_an_api_taking_any_content_type_stores_bytes_with_their_type(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    start_dequeuer(container.port, api_extra="  results:\n    content_type: any\n")
    image = bytes(range(256)) * 64 + b"\x89PNG"
    png = await backend.submit(image, headers=[("X-Behaviour", "png")])
    untyped = await backend.submit(b"\x00\x01", headers=[("X-Behaviour", "untyped")])
    plain = await backend.submit(b'{"a": 1}', content_type="application/json")
    bad = await backend.submit(headers=[("X-Behaviour", "invalid-json")])

    record = await backend.wait_status(png, Status.COMPLETED, Status.FAILED)
    assert record.status is Status.COMPLETED, record.error
    assert record.extra[EXTRA_RESULT_TYPE] == "image/png"
    assert await backend.store.result(API, png) == image
    record = await backend.wait_status(untyped, Status.COMPLETED, Status.FAILED)
    assert record.extra[EXTRA_RESULT_TYPE] == "application/octet-stream"
    assert await backend.store.result(API, untyped) == b"\x00\x01"
    # JSON stays JSON (no type kept), and JSON that does not parse still fails.
    record = await backend.wait_status(plain, Status.COMPLETED, Status.FAILED)
    assert record.status is Status.COMPLETED
    assert EXTRA_RESULT_TYPE not in record.extra
    record = await backend.wait_status(bad, Status.COMPLETED, Status.FAILED)
    assert record.error is not None
    assert record.error.type == "invalid_json"


@pytest.mark.parametrize(
    ("behaviour", "error_type", "status_code", "body"),
    [
        ("status:500", "container_status", 500, '{"error": "boom"}'),
        ("status:201", "container_status", 201, '{"error": "boom"}'),
        ("text", "content_type", 200, "hello"),
        ("invalid-json", "invalid_json", 200, "{not json"),
    ],
)
async def test_bad_answers_fail_with_the_reason(
    container: Container,
    start_dequeuer: StartDequeuer,
    backend: Backend,
    behaviour: str,
    error_type: str,
    status_code: int,
    body: str,
) -> None:
    dequeuer = start_dequeuer(container.port)
    rid = await backend.submit(headers=[("X-Behaviour", behaviour)])

    record = await backend.wait_status(rid, Status.COMPLETED, Status.FAILED)

    assert record.status is Status.FAILED
    assert record.error is not None
    assert record.error.type == error_type
    assert record.error.status_code == status_code
    assert record.error.body == body
    assert await backend.store.result(API, rid) is None
    assert len(container.calls(rid)) == 1  # failed requests are not retried
    depth = await backend.queue.depth(API)
    assert (depth.queued, depth.in_flight) == (0, 0)
    line = dequeuer.wait_log("request failed", request_id=rid)
    assert line["error_type"] == error_type

    metrics = dequeuer.admin("/metrics").text
    assert f'cortex_async_request_count{{status_code="{status_code}"}} 1' in metrics
    assert f'chute_dequeuer_failures_total{{reason="{error_type}"}} 1.0' in metrics
    assert 'chute_dequeuer_requests_total{outcome="failed"} 1.0' in metrics


async def test_missing_or_terminal_records_are_dropped_unsent(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    missing = "missing-record-1"
    await backend.queue.send(API, missing)
    cancelled = await backend.create()
    await backend.store.transition(API, cancelled, Status.CANCELLED)
    await backend.queue.send(API, cancelled)
    normal = await backend.submit()

    dequeuer = start_dequeuer(container.port)

    await backend.wait_status(normal, Status.COMPLETED)
    dequeuer.wait_log("record missing", request_id=missing)
    dequeuer.wait_log("record already cancelled", request_id=cancelled)
    assert container.calls(missing) == []
    assert container.calls(cancelled) == []
    assert (await backend.record(cancelled)).status is Status.CANCELLED
    depth = await backend.queue.depth(API)
    assert (depth.queued, depth.in_flight) == (0, 0)
    metrics = dequeuer.admin("/metrics").text
    assert 'chute_dequeuer_requests_total{outcome="dropped"} 2.0' in metrics


async def test_workers_run_requests_concurrently(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    dequeuer = start_dequeuer(container.port, "--workers", "4")
    ids = [await backend.submit(headers=[("X-Behaviour", "sleep:1.5")]) for _ in range(4)]

    for rid in ids:
        record = await backend.wait_status(rid, Status.COMPLETED, Status.FAILED)
        assert record.status is Status.COMPLETED, record.error

    calls = [c for rid in ids for c in container.calls(rid)]
    assert len(calls) == 4
    # All four ran at once: each started before any finished.
    assert max(c["started"] for c in calls) < min(c["finished"] for c in calls)
    assert rss_peak_mib(dequeuer.proc.pid) < 100


async def test_workers_default_to_max_concurrency(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    dequeuer = start_dequeuer(container.port, max_concurrency=3)
    assert dequeuer.wait_log("dequeuer started")["workers"] == 3


async def test_a_job_longer_than_the_lease_completes_once(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    # A second worker would take the message over if the lease lapsed.
    dequeuer = start_dequeuer(container.port, "--lease", "0.6", "--workers", "2")
    rid = await backend.submit(headers=[("X-Behaviour", "sleep:2.5")])

    record = await backend.wait_status(rid, Status.COMPLETED, Status.FAILED)

    assert record.status is Status.COMPLETED, record.error
    assert record.attempt == 1  # never delivered twice
    assert len(container.calls(rid)) == 1
    metrics = dequeuer.admin("/metrics").text
    (line,) = [x for x in metrics.splitlines() if x.startswith("chute_dequeuer_lease_extensions")]
    assert float(line.split()[1]) >= 5  # 2.5 s at one beat per 0.2 s
