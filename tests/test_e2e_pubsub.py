"""The hello-world example end to end on Google Cloud's pair, on their emulators: Pub/Sub (Google's
own emulator) as the queue and Cloud Storage (fake-gcs-server) as the store. ``chute dev --queue
pubsub://… --store gs://…`` carries ordinary requests and a 50 MiB payload, and a dequeuer
SIGKILLed mid-request loses nothing: its ack deadlines lapse and a new dequeuer completes every
request, each with its own result."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlencode

import anyio
import pytest
from e2e_support import (
    API,
    EXAMPLE,
    Processes,
    fifty_mib_and_twenty_small,
    gcs_bucket_url,
    sigkilled_dequeuer,
    start_chute_dev,
)

import chute
from chute.testing.services import FoundService

MiB = 1024 * 1024

#: On one xdist worker (--dist=loadgroup): one bucket, and one worker's Pub/Sub emulator.
pytestmark = pytest.mark.xdist_group("test_e2e_pubsub")


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
    assert fifty_mib_and_twenty_small(dev.url) == 21


def test_a_sigkilled_dequeuers_requests_complete_with_their_own_results(
    processes: Processes, tmp_path: Path, queue_url: str, store_url: str
) -> None:
    """The dequeuer dies mid-request; its ack deadlines (2 s leases) lapse and a new dequeuer
    completes every request, each with its own payload's result from its latest call, and a
    higher attempt (Pub/Sub's deliveryAttempt) for the interrupted ones."""
    payloads = sigkilled_dequeuer(processes, tmp_path, queue_url, store_url)

    async def check_backends() -> None:
        async with chute.open_store(store_url) as store, chute.open_queue(queue_url) as queue:
            records = [await store.get(API, i) for i in payloads]
            assert all(r is not None and r.status is chute.Status.COMPLETED for r in records)
            assert await queue.list_dead(API) == []

    anyio.run(check_backends)
