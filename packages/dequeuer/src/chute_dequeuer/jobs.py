"""What the dequeuer knows about one delivery while it handles it (:class:`Job`), and the
log adapter that puts the request's id, API and attempt on every line about it."""

from __future__ import annotations

import logging
import math
from collections.abc import MutableMapping
from typing import Any

import anyio

from chute.backends.base import Delivery, Received, Versioned

#: The dequeuer's log of requests (every room of the worker writes to it).
log = logging.getLogger("chute_dequeuer.worker")


class RequestLog(logging.LoggerAdapter[logging.Logger]):
    """Puts ``request_id``, ``api`` and ``attempt`` on every line about a request."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


class Job:
    """One delivery being handled, and what is known about it so far."""

    def __init__(self, delivery: Delivery, received: Received | None = None) -> None:
        self.delivery = delivery
        #: What a joint receive read along with the delivery (None: read it now).
        self.received = received
        self.log = RequestLog(
            log,
            {"request_id": delivery.request_id, "api": delivery.api, "attempt": delivery.attempt},
        )
        self.scope = anyio.CancelScope()
        self.started = False  # the record was moved to in_progress by this delivery
        self.lease_lost = False
        #: The container call, while it runs: cancelled when the request is.
        self.call_scope: anyio.CancelScope | None = None
        self.cancelled = False  # the record was cancelled (or deleted) while the call ran
        #: The record and its version as this worker last read or wrote it: the next move is
        #: written conditionally on it, without re-reading (a stale one is re-read by the store).
        self.held: Versioned | None = None
        #: When (anyio clock) the dequeuer's watcher next extends the lease and, while the
        #: container call runs, next reads the record for a cancellation.
        self.next_extension = math.inf
        self.next_check = math.inf
