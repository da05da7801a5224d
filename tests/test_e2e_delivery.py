"""Delivery guarantees across real processes the test runs itself (not through ``chute dev``,
which by design stops everything when a child dies): a SIGKILLed dequeuer loses nothing,
nothing is pulled before the container is ready, and the gateway's body limit."""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path
from typing import Any

from e2e_support import (
    API,
    Processes,
    Stack,
    calls_by_request,
    eventually,
    http_ok,
    request_status,
    sqlite_url,
    submit,
    wait_finished,
)

import chute
from chute.testing.http import http


def test_a_sigkilled_dequeuers_requests_complete_exactly_once(
    tmp_path: Path, processes: Processes, backend: str
) -> None:
    stack = Stack(processes, tmp_path, backend)
    container = stack.start_container()
    stack.start_gateway()
    workers, lease = "4", "2"
    first, _ = stack.start_dequeuer("--workers", workers, "--lease", lease)

    payloads = {}
    for i in range(8):
        payload = {"text": f"slow {i}", "sleep": 1.5, "token": secrets.token_hex(4)}
        payloads[submit(stack.gateway_url, payload)] = payload

    # Mid-request: the container has started work for the first dequeuer's requests.
    running = eventually(
        lambda: (calls := calls_by_request(container.output())) and len(calls) >= 4 and calls,
        "the container to be working on 4 requests",
    )
    first.signal(signal.SIGKILL)
    first.wait()
    # With no dequeuer left, what the container saw and is not completed was cut off mid-call.
    assert set(running) <= set(payloads)
    interrupted = {
        i for i in running if request_status(stack.gateway_url, i)["status"] != "completed"
    }
    assert interrupted, "the kill came too late: every request seen had already completed"

    # A new dequeuer takes the lapsed leases over.
    stack.start_dequeuer("--workers", workers, "--lease", lease)
    finals = wait_finished(stack.gateway_url, list(payloads), "every request to finish")
    assert all(b["status"] == "completed" for b in finals.values()), finals

    calls = calls_by_request(container.output())
    for request_id, body in finals.items():
        result = body["result"]
        assert result["echo"] == payloads[request_id]
        assert result["request_id"] == request_id
        # The stored result is the answer to the request's latest call.
        assert result["call"] == calls[request_id][-1]
    for request_id in interrupted:
        # Called once by the killed dequeuer, then again for a newer attempt.
        assert len(calls[request_id]) >= 2, calls[request_id]
        assert finals[request_id]["attempts"] >= 2
    # Exactly once in the store: one completed record per request, none left behind.
    records = _store_records(backend, list(payloads))
    assert all(r is not None and r.status == chute.Status.COMPLETED for r in records.values())


def _store_records(url: str, ids: list[str]) -> dict[str, Any]:
    import anyio

    async def read() -> dict[str, Any]:
        async with chute.open_store(url) as store:
            return {i: await store.get(API, i) for i in ids}

    return anyio.run(read)


def test_nothing_is_pulled_before_the_container_is_ready(
    tmp_path: Path, processes: Processes, backend: str
) -> None:
    ready_file = tmp_path / "model-loaded"
    stack = Stack(processes, tmp_path, backend)
    container = stack.start_container(env={"HELLO_READY_FILE": str(ready_file)})
    stack.start_gateway()
    _, admin = stack.start_dequeuer()
    eventually(
        lambda: "Running on" in container.output(), "the container to listen (but not be ready)"
    )
    ids = [submit(stack.gateway_url, {"text": f"early {i}"}) for i in range(3)]

    # Several probe periods (1 s in the API file) go by: nothing moves.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert all(request_status(stack.gateway_url, i)["status"] == "in_queue" for i in ids)
        assert not http_ok(f"http://127.0.0.1:{admin}/healthz")
    assert calls_by_request(container.output()) == {}

    ready_file.touch()
    finals = wait_finished(stack.gateway_url, ids, "the requests to finish once it is ready")
    assert [finals[i]["status"] for i in ids] == ["completed"] * 3, finals
    assert [finals[i]["result"]["echo"] for i in ids] == [{"text": f"early {i}"} for i in range(3)]
    assert http_ok(f"http://127.0.0.1:{admin}/healthz")


def test_a_body_over_the_limit_is_413(tmp_path: Path, processes: Processes) -> None:
    stack = Stack(processes, tmp_path, sqlite_url(tmp_path), max_body_size="1KiB")
    stack.start_gateway()
    small = http().post(f"{stack.gateway_url}/{API}", content=b"x" * 1024, timeout=30)
    assert small.status_code == 200, small.text
    big = http().post(f"{stack.gateway_url}/{API}", content=b"x" * 1025, timeout=30)
    assert big.status_code == 413, big.text
    assert big.json()["error"]["type"]
    assert "1024" in big.json()["error"]["message"]
