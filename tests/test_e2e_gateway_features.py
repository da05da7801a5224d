"""Issue 5's gateway features end to end: a real gateway, real dequeuers and the example
container, on SQLite and Redis. Cancelling a queued and a running request, an idempotent submit,
a long-poll that answers when the result lands, and API keys."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from e2e_support import (
    API,
    PY,
    Processes,
    Stack,
    calls_by_request,
    eventually,
    http_ok,
    request_status,
    submit,
)

from chute.testing.http import http


def test_cancel_a_queued_and_a_running_request(
    tmp_path: Path, processes: Processes, backend: str
) -> None:
    stack = Stack(processes, tmp_path, backend)
    container = stack.start_container()
    stack.start_gateway()

    # Queued: cancelled before any dequeuer runs, it never reaches the container.
    queued = submit(stack.gateway_url, {"text": "never"})
    response = http().delete(f"{stack.gateway_url}/{API}/{queued}", timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    stack.start_dequeuer("--workers", "1")
    running = submit(stack.gateway_url, {"text": "slow", "sleep": 30})
    eventually(lambda: running in calls_by_request(container.output()), "the slow call to start")
    assert request_status(stack.gateway_url, running)["status"] == "in_progress"
    cancelled_at = time.monotonic()
    response = http().delete(f"{stack.gateway_url}/{API}/{running}", timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    # The dequeuer closes the call and frees its only worker: the next request runs long
    # before the cancelled one's 30 s would have ended.
    after = submit(stack.gateway_url, {"text": "next"})
    final = http().get(f"{stack.gateway_url}/{API}/{after}", params={"wait": 60}, timeout=90)
    assert final.json()["status"] == "completed", final.text
    assert time.monotonic() - cancelled_at < 25
    # Nothing overwrote the cancellation, and the queued request never ran.
    assert request_status(stack.gateway_url, running)["status"] == "cancelled"
    assert request_status(stack.gateway_url, queued)["status"] == "cancelled"
    assert queued not in calls_by_request(container.output())
    # A finished request cannot be cancelled.
    conflict = http().delete(f"{stack.gateway_url}/{API}/{after}", timeout=30)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["type"] == "conflict"


def test_idempotent_submit_runs_once_and_long_poll_answers_when_the_result_lands(
    tmp_path: Path, processes: Processes, backend: str
) -> None:
    stack = Stack(processes, tmp_path, backend)
    container = stack.start_container()
    stack.start_gateway()
    stack.start_dequeuer("--workers", "2")

    key = f"order-{secrets.token_hex(4)}"
    payload = {"text": "once", "sleep": 2}
    first = submit(stack.gateway_url, payload, {"Idempotency-Key": key})
    started = time.monotonic()
    # The repeat (a client retrying after a lost answer) gets the same id.
    assert submit(stack.gateway_url, payload, {"Idempotency-Key": key}) == first
    response = http().get(f"{stack.gateway_url}/{API}/{first}", params={"wait": 60}, timeout=90)
    waited = time.monotonic() - started
    body = response.json()
    assert body["status"] == "completed", body
    assert body["result"]["echo"] == payload
    assert waited < 50  # answered when the result landed, not when the 60 s ran out
    # A repeat after it finished still returns the same id, and nothing ran twice.
    assert submit(stack.gateway_url, payload, {"Idempotency-Key": key}) == first
    # Had a repeat been enqueued, it would be queued or in flight until its delivery ended (a
    # container call is logged before its ack): an empty queue means every delivery is done.
    eventually(lambda: queue_depth(stack.gateway_url) == (0, 0), "the queue to be empty")
    assert calls_by_request(container.output())[first] == [1]
    other = http().post(
        f"{stack.gateway_url}/{API}", json={"text": "else"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 409


def queue_depth(gateway_url: str) -> tuple[int, int]:
    """What ``/queues/<api>`` counts as queued and in flight."""
    depth = http().get(f"{gateway_url}/queues/{API}", timeout=30).json()
    return depth["queued"], depth["in_flight"]


def test_api_keys_guard_the_api_not_health(
    tmp_path: Path, processes: Processes, backend: str
) -> None:
    stack = Stack(processes, tmp_path, backend)
    stack.start_container()
    key = secrets.token_urlsafe(16)
    port = stack.gateway_url.rsplit(":", 1)[1]
    argv = [PY, "-m", "chute", "gateway", str(stack.api_file), "--port", port]
    argv += ["--queue", backend, "--store", backend, "--protect-admin"]
    gateway = processes.start("gateway", argv, env={"CHUTE_API_KEYS": key})
    eventually(lambda: http_ok(f"{stack.gateway_url}/healthz"), "the gateway's /healthz")
    stack.start_dequeuer()

    refused = http().post(f"{stack.gateway_url}/{API}", json={"text": "x"}, timeout=30)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert http().get(f"{stack.gateway_url}/queues/{API}", timeout=30).status_code == 401

    import chute

    with chute.Client(stack.gateway_url, api_key=key) as client:
        request_id = client.submit(API, json={"text": "keyed"})
        result = client.wait(API, request_id, timeout=60)
    assert result.status == "completed"
    assert result.result["message"] == "hello, keyed!"
    depth = (
        http()
        .get(
            f"{stack.gateway_url}/queues/{API}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        .json()
    )
    assert depth == {"api": API, "queued": 0, "in_flight": 0, "dead": 0}
    assert key not in gateway.output()
