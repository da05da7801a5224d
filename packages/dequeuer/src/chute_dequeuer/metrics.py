"""The dequeuer's Prometheus metrics: Cortex's two, under Cortex's exact names, and chute's own.

Cortex's Go dequeuer exposed ``cortex_async_request_count`` as a counter without the ``_total``
suffix that prometheus_client always appends, so that one counter is rendered here by hand;
dashboards and alerts written for Cortex keep working. Everything else lives in a dedicated
:class:`CollectorRegistry` (never the process-global one).
"""

from __future__ import annotations

import threading
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# ``*_created`` series double the output and no dashboard reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: Seconds of the container call. Cortex stopped at 10 s; async jobs run for minutes or hours.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _CortexRequestCount:
    """``cortex_async_request_count{status_code}``, rendered exactly as Cortex's Go client did."""

    name = "cortex_async_request_count"

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def inc(self, status_code: int) -> None:
        with self._lock:
            self._counts[status_code] = self._counts.get(status_code, 0) + 1

    def value(self, status_code: int) -> int:
        return self._counts.get(status_code, 0)

    def render(self) -> bytes:
        lines = [
            f"# HELP {self.name} Requests answered by the user container, by status code.",
            f"# TYPE {self.name} counter",
        ]
        with self._lock:
            items = sorted(self._counts.items())
        lines += [f'{self.name}{{status_code="{code}"}} {count}' for code, count in items]
        return ("\n".join(lines) + "\n").encode()


class Metrics:
    """All metrics of one dequeuer process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_count = _CortexRequestCount()
        self.latency = Histogram(
            "cortex_async_latency",
            "Seconds of the call to the user container (request sent to response read), "
            "by status code.",
            ["status_code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "chute_dequeuer_in_flight", "Requests this dequeuer is working on now.", registry=r
        )
        self.ready = Gauge(
            "chute_dequeuer_ready",
            "1 while every readiness probe passes (the dequeuer pulls work), else 0.",
            registry=r,
        )
        self.lease_extensions = Counter(
            "chute_dequeuer_lease_extensions",
            "Leases extended by the heartbeat while the container worked.",
            registry=r,
        )
        self.failures = Counter(
            "chute_dequeuer_failures",
            "Requests marked failed, by reason (the stored error type).",
            ["reason"],
            registry=r,
        )
        self.requests = Counter(
            "chute_dequeuer_requests",
            "Deliveries handled, by outcome: completed, failed, dead_lettered (failed after "
            "the last attempt), retried (released for another attempt), expired (queue "
            "deadline passed), cancelled (while running), dropped (record missing or "
            "terminal), superseded (a newer attempt owns it), released (given back to the "
            "queue), lease_lost.",
            ["outcome"],
            registry=r,
        )
        self.backend_calls = Counter(
            "chute_dequeuer_backend_batches",
            "Backend calls that carry a batch, by kind: receive (messages leased), write "
            "(starts and outcomes: Store.write_many), settle (outcome and ack: "
            "Joint.settle_many), ack (Queue.ack_many, where the ack is not part of the settle).",
            ["kind"],
            registry=r,
        )
        self.batched_items = Counter(
            "chute_dequeuer_backend_batch_items",
            "Items those calls carried, by kind (items / calls = the mean batch size).",
            ["kind"],
            registry=r,
        )
        self.webhooks = Counter(
            "chute_dequeuer_webhooks",
            "Webhook deliveries finished, by outcome: delivered, failed (retries ran out), "
            "dropped (the delivery queue was full).",
            ["outcome"],
            registry=r,
        )

        # Labelled children looked up once each: ``labels()`` takes a lock and builds a key,
        # and these are counted for every request.
        self._latency: dict[int, Any] = {}
        self._outcomes: dict[str, Any] = {}
        self._batches: dict[str, tuple[Any, Any]] = {}

    def observe_call(self, status_code: int, seconds: float) -> None:
        """Record one answer of the user container (Cortex records only answered calls)."""
        self.request_count.inc(status_code)
        child = self._latency.get(status_code)
        if child is None:
            child = self._latency[status_code] = self.latency.labels(status_code=str(status_code))
        child.observe(seconds)

    def handled(self, outcome: str) -> None:
        """Count one delivery handled, by its outcome (``chute_dequeuer_requests``)."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.requests.labels(outcome=outcome)
        child.inc()

    def batch(self, kind: str, items: int) -> None:
        """Record one batched backend call of ``items`` items."""
        pair = self._batches.get(kind)
        if pair is None:
            pair = self._batches[kind] = (
                self.backend_calls.labels(kind=kind),
                self.batched_items.labels(kind=kind),
            )
        pair[0].inc()
        pair[1].inc(items)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return self.request_count.render() + generate_latest(self.registry)
