"""Recent throughput and latency of an API, as the dashboard and ``chute status`` show them.

They are derived from the store's listing (nothing is counted in the gateway, so every replica
and the CLI see the same figures): the newest completed and failed requests are listed, up to
:data:`SAMPLE` of each, and those that finished within the last :data:`WINDOW` seconds count.

* throughput: finished requests per minute over the window (completed and failed apart);
  when the sample is full inside the window, the true figure is higher and ``at_least`` says so;
* latency: ``finished_at - created_at`` of the completed ones (what a client waits, queueing
  included), p50 and p95, and ``finished_at - started_at`` (the container's run, last attempt).

A store that cannot list has no such figures: they are None and the page says why.
"""

from __future__ import annotations

import math

import msgspec

from chute.backends.base import Store
from chute.protocol import RequestRecord, Status, now

#: The window the rates and latencies cover, in seconds.
WINDOW = 300.0
#: The most requests of each status read per computation.
SAMPLE = 200


class Rates(msgspec.Struct, frozen=True):
    """Finished requests in the last ``window`` seconds and their latencies (seconds)."""

    window: float
    completed: int
    failed: int
    #: Finished (completed + failed) per minute over the window.
    per_minute: float
    #: True when a status's sample was full within the window: the rate is a lower bound.
    at_least: bool
    latency_p50: float | None = None
    latency_p95: float | None = None
    run_p50: float | None = None


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def recent_rates(store: Store, api: str, *, window: float = WINDOW) -> Rates:
    """The API's :class:`Rates` from the store's listing (the store must support it)."""
    since = now() - window
    finished: dict[Status, list[RequestRecord]] = {}
    full = False
    for status in (Status.COMPLETED, Status.FAILED):
        page = await store.list_requests(api, status=status, limit=SAMPLE)
        recent = [r for r in page.records if r.finished_at is not None and r.finished_at >= since]
        finished[status] = recent
        # Listing is by creation time: when every record of a full page finished within the
        # window, older pages may hold more that did.
        full |= page.cursor is not None and len(recent) == len(page.records)
    done = finished[Status.COMPLETED]
    latencies = [r.finished_at - r.created_at for r in done if r.finished_at is not None]
    runs = [
        r.finished_at - r.started_at
        for r in done
        if r.finished_at is not None and r.started_at is not None
    ]
    count = len(done) + len(finished[Status.FAILED])
    return Rates(
        window=window,
        completed=len(done),
        failed=len(finished[Status.FAILED]),
        per_minute=round(count * 60.0 / window, 2),
        at_least=full,
        latency_p50=percentile(latencies, 0.5),
        latency_p95=percentile(latencies, 0.95),
        run_p50=percentile(runs, 0.5),
    )
