"""Batches: a deep queue is received (and started) and settled in batches, each request still
handled exactly once with its own outcome; on SQLite and on Redis."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from dequeuer_harness import Backend, Container, Dequeuer

from chute.protocol import Status

pytestmark = pytest.mark.anyio

StartDequeuer = Callable[..., Dequeuer]


@pytest.fixture
def db_url(any_url: str) -> str:
    return any_url


def counter(metrics: str, name: str, kind: str) -> float:
    found = re.search(rf'^{name}{{kind="{kind}"}} ([0-9.e+]+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_deep_queue_is_received_in_batches_each_request_once(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    """Twelve requests wait before four workers start: the workers take them in receives of
    several, and every request is called once and completed with its own result. If this
    fails, batching loses, duplicates or mixes up requests, or never batches at all."""
    bodies = {await backend.submit(f'{{"n": {n}}}'.encode()): n for n in range(12)}
    dequeuer = start_dequeuer(container.port, "--workers", "4")
    for rid, n in bodies.items():
        record = await backend.wait_status(rid, Status.COMPLETED, Status.FAILED)
        assert record.status is Status.COMPLETED, record.error
        assert len(container.calls(rid)) == 1
        result = await backend.store.result(record.api, rid)
        assert result is not None
        assert json.loads(json.loads(result)["body"]) == {"n": n}  # its own result
    depth = await backend.queue.depth(record.api)
    assert (depth.queued, depth.in_flight) == (0, 0)
    metrics = dequeuer.admin("/metrics").text
    calls = counter(metrics, "chute_dequeuer_backend_batches_total", "receive")
    items = counter(metrics, "chute_dequeuer_backend_batch_items_total", "receive")
    assert items == 12
    assert calls < items, "no receive carried more than one message"
    # Both backends have the joint path (queue and store in one place) and it starts on
    # receive: each start was written by the receive itself, none by a write of its own;
    # the outcomes went through the group commit (batched or alone), each with its ack.
    assert counter(metrics, "chute_dequeuer_backend_batch_items_total", "write") == 0
    settled = counter(metrics, "chute_dequeuer_backend_batch_items_total", "settle")
    acked = counter(metrics, "chute_dequeuer_backend_batch_items_total", "ack")
    assert (settled, acked) == (12, 0)
