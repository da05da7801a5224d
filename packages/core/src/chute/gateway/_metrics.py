"""The gateway's Prometheus metrics, in a registry of its own.

Request counts and latencies are recorded as requests finish. Queue depth is not tracked by
the gateway at all: it is read from the queue backend when Prometheus scrapes ``/metrics``, so
every gateway replica reports the same, true figure (as Cortex's operator did every 10 s with
``GetQueueAttributes``), under chute's name and Cortex's three gauge names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chute.backends.base import Queue, QueueDepth
from chute.errors import ChuteError

#: What ``/metrics`` answers with (the Prometheus text format, version 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets (seconds): a submit is a store write and a queue send, a GET one read.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Long-poll buckets (seconds): a ``?wait=`` GET lasts up to 60 s by design.
LONG_POLL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0)

logger = logging.getLogger("chute.gateway")


class QueueDepthCollector(Collector):
    """Yields the depth snapshot taken by :meth:`refresh` just before the registry is read.

    prometheus_client collectors are synchronous, the queue is not: the ``/metrics`` handler
    awaits :meth:`refresh`, then renders, so the figures are as fresh as the scrape.
    """

    def __init__(self, apis: Sequence[str], timeout: float = 5.0) -> None:
        self.apis = list(apis)
        self.timeout = timeout
        self.snapshot: dict[str, QueueDepth] = {}

    async def refresh(self, queue: Queue) -> None:
        """Read every API's depth, concurrently; an API whose backend fails or does not answer
        within :attr:`timeout` seconds is left out of this scrape (and logged). A queue that
        declares it cannot count (``supports_depth`` False) is not asked: no depth, no log."""
        depths: dict[str, QueueDepth] = {}
        if not queue.supports_depth:
            self.snapshot = depths
            return

        async def one(api: str) -> None:
            try:
                depths[api] = await queue.depth(api)
            except ChuteError as exc:  # the scrape still answers, without this API's depth
                logger.warning("queue depth unavailable", extra={"api": api, "error": str(exc)})

        with anyio.move_on_after(self.timeout) as scope:
            async with anyio.create_task_group() as tg:
                for api in self.apis:
                    tg.start_soon(one, api)
        if scope.cancelled_caught:
            logger.warning("queue depth timed out", extra={"timeout": self.timeout})
        self.snapshot = depths

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "chute_queue_depth",
            "Messages in the API's queue, by state (queued, in_flight = leased, dead).",
            labels=["api", "state"],
        )
        queued = GaugeMetricFamily(
            "cortex_async_queued",
            "Cortex: messages waiting in the queue (SQS ApproximateNumberOfMessages).",
            labels=["api_name", "api_kind"],
        )
        active = GaugeMetricFamily(
            "cortex_async_active",
            "Cortex: messages being processed (SQS ApproximateNumberOfMessagesNotVisible).",
            labels=["api_name", "api_kind"],
        )
        in_flight = GaugeMetricFamily(
            "cortex_async_in_flight",
            "Cortex: queued + active; the signal Cortex's autoscaler divides by target_in_flight.",
            labels=["api_name", "api_kind"],
        )
        for api, d in sorted(self.snapshot.items()):
            depth.add_metric([api, "queued"], d.queued)
            depth.add_metric([api, "in_flight"], d.in_flight)
            depth.add_metric([api, "dead"], d.dead)
            queued.add_metric([api, "AsyncAPI"], d.queued)
            active.add_metric([api, "AsyncAPI"], d.in_flight)
            in_flight.add_metric([api, "AsyncAPI"], d.queued + d.in_flight)
        yield from (depth, queued, active, in_flight)


class GatewayMetrics:
    """Counters and histograms of one gateway process, plus the queue depth collector."""

    def __init__(self, apis: Sequence[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "chute_gateway_requests",
            "HTTP requests answered by the gateway, by API, method and status code.",
            ["api", "method", "status_code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "chute_gateway_request_duration_seconds",
            "Time from request start to the end of the response, by API and method.",
            ["api", "method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        # Long-polls last up to a minute on purpose: kept out of the latency histogram above.
        self.long_poll = Histogram(
            "chute_gateway_long_poll_duration_seconds",
            "Time a GET with ?wait= was held before its answer, by API.",
            ["api"],
            buckets=LONG_POLL_BUCKETS,
            registry=self.registry,
        )
        self.long_poll_waiters = Gauge(
            "chute_gateway_long_poll_waiters",
            "GETs with ?wait= waiting now.",
            registry=self.registry,
        )
        self.watched_requests = Gauge(
            "chute_gateway_watched_requests",
            "Request ids watched now for long-polls (one store read each per poll interval).",
            registry=self.registry,
        )
        self.watch_reads = Counter(
            "chute_gateway_watch_reads",
            "Store reads made by long-poll watches, shared by every waiter of a request.",
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "chute_gateway_idempotent_replays",
            "Submits answered with an earlier request's id (same Idempotency-Key and body).",
            ["api"],
            registry=self.registry,
        )
        self.submits_settled = Counter(
            "chute_gateway_submits_settled",
            "Submits whose create or enqueue had an unknown outcome, by what settling found: "
            "refused (answered 503), runs (answered the id), others (an idempotent repeat's), "
            "unknown (the store stayed unreachable; answered the id, settled in the background).",
            ["api", "outcome"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "chute_gateway_webhooks",
            "Webhook deliveries of the gateway's own transitions (cancelled, expired), by "
            "final outcome: delivered, failed, dropped.",
            ["outcome"],
            registry=self.registry,
        )
        self.queue_depth = QueueDepthCollector(apis)
        self.registry.register(self.queue_depth)
        # labels() costs a lock and a tuple build; the hot path looks children up here instead.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(
        self, api: str, method: str, status_code: int, seconds: float, *, long_poll: bool = False
    ) -> None:
        """Record one answered request. ``api`` is ``""`` for the gateway's own routes and for
        paths that matched no API (so unknown paths cannot blow up the label cardinality).
        A long-poll's duration goes to its own histogram."""
        key = (api, method, status_code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(api, method, str(status_code))
        counter.inc()
        if long_poll:
            self.long_poll.labels(api).observe(seconds)
            return
        hkey = (api, method)
        histogram = self._histograms.get(hkey)
        if histogram is None:
            histogram = self._histograms[hkey] = self.duration.labels(api, method)
        histogram.observe(seconds)

    async def render(self, queue: Queue | None) -> bytes:
        """The text exposition, with queue depth read from ``queue`` now (omitted if None)."""
        if queue is not None:
            await self.queue_depth.refresh(queue)
        else:
            self.queue_depth.snapshot = {}
        return generate_latest(self.registry)
