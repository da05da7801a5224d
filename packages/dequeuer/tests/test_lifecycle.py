"""The dequeuer's life: readiness gating, graceful shutdown, crashes of either process."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from dequeuer_harness import API, Backend, Container, Dequeuer

from chute.protocol import Status
from chute.testing import eventually_async as eventually

pytestmark = pytest.mark.anyio

StartDequeuer = Callable[..., Dequeuer]


async def test_nothing_is_pulled_until_the_container_is_ready(
    tmp_path: Path,
    container_factory: Callable[..., Container],
    start_dequeuer: StartDequeuer,
    backend: Backend,
) -> None:
    ready_file = tmp_path / "ready"
    container = container_factory(ready_file)
    dequeuer = start_dequeuer(container.port)
    ids = [await backend.submit() for _ in range(2)]

    # Probes run every second; give them several chances to (wrongly) pass.
    await anyio.sleep(2.5)
    for rid in ids:
        assert (await backend.record(rid)).status is Status.IN_QUEUE
    assert container.calls() == []
    assert (await backend.queue.depth(API)).queued == 2
    health = dequeuer.admin("/healthz")
    assert (health.status_code, health.text) == (503, "unhealthy")
    metrics = dequeuer.admin("/metrics").text
    assert "chute_dequeuer_ready 0.0" in metrics
    assert "chute_dequeuer_requests_total{" not in metrics  # nothing received, not even released

    ready_file.touch()
    for rid in ids:
        await backend.wait_status(rid, Status.COMPLETED)
    health = dequeuer.admin("/healthz")
    assert (health.status_code, health.text) == (200, "healthy")
    assert "chute_dequeuer_ready 1.0" in dequeuer.admin("/metrics").text

    # Not ready again: /healthz flips and pulling stops.
    ready_file.unlink()
    await eventually(lambda: dequeuer.admin("/healthz").status_code == 503)
    late = await backend.submit()
    await anyio.sleep(1.5)
    assert (await backend.record(late)).status is Status.IN_QUEUE
    assert container.calls(late) == []
    ready_file.touch()
    await backend.wait_status(late, Status.COMPLETED)


async def test_sigterm_lets_requests_in_flight_finish(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    dequeuer = start_dequeuer(container.port, "--workers", "2")
    rid = await backend.submit(headers=[("X-Behaviour", "sleep:1.5")])
    await backend.wait_status(rid, Status.IN_PROGRESS)
    queued_after = None

    dequeuer.signal(signal.SIGTERM)
    dequeuer.wait_log("draining")
    queued_after = await backend.submit()  # arrives after SIGTERM: must not be taken

    assert await anyio.to_thread.run_sync(dequeuer.wait, 20) == 0
    record = await backend.record(rid)
    assert record.status is Status.COMPLETED
    assert (await backend.record(queued_after)).status is Status.IN_QUEUE
    assert container.calls(queued_after) == []
    depth = await backend.queue.depth(API)
    assert (depth.queued, depth.in_flight) == (1, 0)
    dequeuer.wait_log("shutdown complete")


async def test_grace_period_over_gives_requests_back_at_once(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    dequeuer = start_dequeuer(container.port, "--grace-period", "0.5")
    rid = await backend.submit(headers=[("X-Behaviour", "sleep:30")])
    await backend.wait_status(rid, Status.IN_PROGRESS)

    started = time.monotonic()
    dequeuer.signal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(dequeuer.wait, 25) == 0
    assert time.monotonic() - started < 20  # did not wait for the 30 s job
    dequeuer.wait_log("grace period over", request_id=rid)

    # Released, not leased: visible again at once, and the record says so.
    record = await backend.record(rid)
    assert record.status is Status.IN_QUEUE
    depth = await backend.queue.depth(API)
    assert (depth.queued, depth.in_flight) == (1, 0)


async def test_a_second_signal_cuts_the_grace_period_short(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    dequeuer = start_dequeuer(container.port, "--grace-period", "60")
    rid = await backend.submit(headers=[("X-Behaviour", "sleep:30")])
    await backend.wait_status(rid, Status.IN_PROGRESS)

    started = time.monotonic()
    dequeuer.signal(signal.SIGTERM)
    dequeuer.wait_log("draining")
    dequeuer.signal(signal.SIGINT)
    assert await anyio.to_thread.run_sync(dequeuer.wait, 25) == 0
    assert time.monotonic() - started < 20  # did not wait for the 30 s job
    assert (await backend.record(rid)).status is Status.IN_QUEUE


async def test_sigkill_mid_request_is_redelivered_and_completes_once(
    container: Container, start_dequeuer: StartDequeuer, backend: Backend
) -> None:
    first = start_dequeuer(container.port, "--lease", "1")
    rid = await backend.submit(headers=[("X-Behaviour", "sleep:1")])
    await backend.wait_status(rid, Status.IN_PROGRESS)
    # Started is not yet called (a joint receive starts the request before the call): kill
    # once the container has it.
    await eventually(lambda: len(container.calls(rid)) == 1)
    first.proc.kill()
    assert await anyio.to_thread.run_sync(first.wait, 10) == -signal.SIGKILL

    second = start_dequeuer(container.port, "--lease", "1")
    record = await backend.wait_status(rid, Status.COMPLETED, Status.FAILED)

    assert record.status is Status.COMPLETED, record.error
    assert record.attempt == 2  # the second delivery took over with a newer attempt
    calls = container.calls(rid)
    assert len(calls) == 2  # the killed attempt reached the container too

    def completions() -> list[int]:
        return [
            line["attempt"]
            for line in first.lines + second.lines
            if line.get("message") == "request completed" and line.get("request_id") == rid
        ]

    # The line is logged once the outcome is stored: the record can be read a moment before.
    await eventually(lambda: len(completions()) > 0)
    assert completions() == [2]
    depth = await backend.queue.depth(API)
    assert (depth.queued, depth.in_flight) == (0, 0)


async def test_a_container_that_dies_mid_request_fails_it(
    container_factory: Callable[..., Container],
    start_dequeuer: StartDequeuer,
    backend: Backend,
) -> None:
    container = container_factory()
    dequeuer = start_dequeuer(container.port)
    rid = await backend.submit(headers=[("X-Behaviour", "exit")])

    record = await backend.wait_status(rid, Status.FAILED, Status.COMPLETED)

    assert record.status is Status.FAILED
    assert record.error is not None
    assert record.error.type == "connection"
    assert record.error.status_code is None
    # The container is gone: the default TCP probe fails, /healthz follows.
    await eventually(lambda: dequeuer.admin("/healthz").status_code == 503)
