"""The hello-world example end to end on Google Cloud's pair, on their emulators: Pub/Sub (Google's
own emulator) as the queue and Cloud Storage (fake-gcs-server) as the store. ``chute dev --queue
pubsub://… --store gs://…`` carries ordinary requests and a 50 MiB payload, and a dequeuer
SIGKILLed mid-request loses nothing: its ack deadlines lapse and a new dequeuer completes every
request, each with its own result."""

from __future__ import annotations

import secrets
import signal
import uuid
from pathlib import Path
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from e2e_support import (
    API,
    EXAMPLE,
    Processes,
    Stack,
    calls_by_request,
    eventually,
    fifty_mib_and_twenty_small,
    gcs_bucket_url,
    request_status,
    start_chute_dev,
    wait_finished,
)

import chute
from chute.testing.services import GCS, PUBSUB, FoundService, service_fixture

gcs_service = service_fixture(GCS)
pubsub_service = service_fixture(PUBSUB)
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def store_url(gcs_service: FoundService) -> str:
    """A bucket of this module's own on the GCS emulator, as a ``gs://`` store URL."""
    return gcs_bucket_url(gcs_service)


@pytest.fixture
def queue_url(pubsub_service: FoundService) -> str:
    """Topics and subscriptions of this test's own (created on first use). The shortest ack
    deadline Pub/Sub allows, so that a message handed to a pull of the killed dequeuer (the
    emulator keeps serving pulls whose client is gone) comes back soon."""
    endpoint = pubsub_service.url.rstrip("/")
    query = urlencode({"endpoint_url": endpoint, "ack_deadline": "10"})
    return f"pubsub://chute-e2e/e2e-{uuid.uuid4().hex[:10]}?{query}"


def test_chute_dev_on_pubsub_and_gcs_with_a_50_mib_payload(
    processes: Processes, tmp_path: Path, queue_url: str, store_url: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    dev = start_chute_dev(processes, EXAMPLE, state, "--queue", queue_url, "--store", store_url)
    dev.wait_ready()
    fifty_mib_and_twenty_small(dev.url)


def test_a_sigkilled_dequeuers_requests_complete_with_their_own_results(
    processes: Processes, tmp_path: Path, queue_url: str, store_url: str
) -> None:
    """The dequeuer dies mid-request; its ack deadlines (2 s leases) lapse and a new dequeuer
    completes every request, each with its own payload's result from its latest call, and a
    higher attempt (Pub/Sub's deliveryAttempt) for the interrupted ones."""
    stack = Stack(processes, tmp_path, queue_url, store=store_url)
    container = stack.start_container()
    stack.start_gateway()
    gateway = stack.gateway_url
    first = stack.start_dequeuer("--workers", "4", "--lease", "2")[0]
    payloads = {}
    for i in range(8):
        payload = {"text": f"slow {i}", "sleep": 1.5, "token": secrets.token_hex(4)}
        response = httpx.post(f"{gateway}/{API}", json=payload, timeout=30)
        assert response.status_code == 200, response.text
        payloads[response.json()["id"]] = payload

    running = eventually(
        lambda: (calls := calls_by_request(container.output())) and len(calls) >= 4 and calls,
        "the container to be working on 4 requests",
    )
    first.signal(signal.SIGKILL)
    first.wait()
    interrupted = {i for i in running if request_status(gateway, i)["status"] != "completed"}
    assert interrupted, "the kill came too late: every request seen had already completed"

    stack.start_dequeuer("--workers", "4", "--lease", "2")
    finals = wait_finished(gateway, list(payloads), "every request to finish")
    assert all(b["status"] == "completed" for b in finals.values()), finals
    calls = calls_by_request(container.output())
    for request_id, body in finals.items():
        assert body["result"]["echo"] == payloads[request_id]
        assert body["result"]["call"] == calls[request_id][-1]
    for request_id in interrupted:
        assert len(calls[request_id]) >= 2, calls[request_id]
        assert finals[request_id]["attempts"] >= 2

    async def check_backends() -> None:
        async with chute.open_store(store_url) as store, chute.open_queue(queue_url) as queue:
            records = [await store.get(API, i) for i in payloads]
            assert all(r is not None and r.status is chute.Status.COMPLETED for r in records)
            assert await queue.list_dead(API) == []

    anyio.run(check_backends)
