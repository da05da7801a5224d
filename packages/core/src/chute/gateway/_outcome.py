"""Making a submit's unknown outcome definite before the gateway answers.

A create (or an enqueue) whose reply was lost — the backend restarted, the connection broke,
the call timed out — may or may not have happened: Redis may have run the script and written
it to its append-only file just before it was killed. Taking "no reply" for "not created"
would answer 503 for a request that then runs, and a client honouring ``Retry-After`` would
run it twice. :func:`settle` finds out, through the Store ABC alone (so it holds for every
backend and every key layout), and makes the outcome definite:

* no record: a *refusal tombstone* is created in its place (create-if-absent), so a create
  still on its way can never land; the request will not run;
* our record, still ``in_queue`` and never received (attempt 0): a compare-and-set moves it to
  ``cancelled`` with ``extra.refused`` (then it is removed); a message already queued for it
  is dropped by the dequeuer, which drops messages whose record is missing or terminal; the
  request will not run;
* our record, received by a dequeuer (or ended): the request runs (ran); it gets its id;
* someone else's record under the same id (an idempotent repeat won the race): ours was
  never stored; the caller answers as a repeat of that one.

The backend is asked again, with backoff, until it answers or the deadline passes
(:data:`Settled.UNKNOWN`). See docs/gateway.md, "What an answer promises".
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

import anyio
import msgspec

from chute.backends.base import Store
from chute.backoff import Backoff
from chute.errors import ChuteError, Conflict
from chute.protocol import ErrorInfo, RequestRecord, Status, now

logger = logging.getLogger("chute.gateway")

#: ``RequestRecord.extra`` key of a record the gateway refused (a 503 was, or an unconfirmed
#: id may have been, answered for it): it never runs, and an Idempotency-Key repeat that meets
#: it starts afresh.
EXTRA_REFUSED = "refused"
#: ``ErrorInfo.type`` of a refused record.
REFUSED_ERROR = "submit_refused"
#: ``ErrorInfo.type`` of a request answered with its id while the store was unreachable, and
#: refused once the store answered (it had not started): ``GET`` says so instead of 404.
UNCONFIRMED_ERROR = "submit_unconfirmed"
#: How long a refusal tombstone (for a record that was not there) is kept: longer than any
#: create still in flight can take to arrive.
TOMBSTONE_TTL = 3600.0
#: Backoff between attempts to reach the store.
BACKOFF = Backoff(first=0.05, cap=1.0, jitter="half")
#: The longest one read or write of the settling may take before it counts as unanswered.
STEP_TIMEOUT = 10.0


class Settled(enum.Enum):
    """What :func:`settle` found out."""

    #: The request will not run: answer an error.
    REFUSED = "refused"
    #: A dequeuer took the request (or it ended): it runs; answer its id.
    RUNS = "runs"
    #: The id belongs to another submit (an Idempotency-Key repeat stored it first).
    OTHERS = "others"
    #: The store did not answer before the deadline: nothing is known.
    UNKNOWN = "unknown"


class Settlement(NamedTuple):
    settled: Settled
    #: The record found (for OTHERS: the other submit's record).
    record: RequestRecord | None = None


def refused(record: RequestRecord, *, error_type: str, message: str) -> RequestRecord:
    """``record`` as a refused, ``cancelled`` record (terminal: nothing moves it again)."""
    at = now()
    return msgspec.structs.replace(
        record,
        status=Status.CANCELLED,
        finished_at=at,
        error=ErrorInfo(type=error_type, message=message),
        extra={**record.extra, EXTRA_REFUSED: True},
    )


def is_refused(record: RequestRecord) -> bool:
    return bool(record.extra.get(EXTRA_REFUSED))


def same_submit(found: RequestRecord, ours: RequestRecord) -> bool:
    """Whether ``found`` is the record ``ours`` created (or its tombstone), not another
    submit's under the same (idempotent) id."""
    return found.created_at == ours.created_at and found.api == ours.api


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover (makes this an async generator)


async def settle(
    store: Store,
    record: RequestRecord,
    *,
    deadline: float,
    error_type: str = REFUSED_ERROR,
    message: str = "the gateway answered 503: the store did not confirm the submit",
    remove: bool = True,
) -> Settlement:
    """Make the outcome of creating (and queueing) ``record`` definite; see the module doc.

    ``deadline`` is a ``time.monotonic()`` instant. ``remove``: delete a record refused by the
    compare-and-set (its client gets an error and never sees it); False keeps it so that a
    client holding its id reads why it did not run.
    """
    api, request_id = record.api, record.id
    attempt = 0
    while True:
        try:
            with anyio.fail_after(max(0.0, min(STEP_TIMEOUT, deadline - time.monotonic()))):
                outcome = await _settle_once(
                    store, record, error_type=error_type, message=message, remove=remove
                )
            if outcome is not None:
                return outcome
            continue  # the record moved, or a tombstone lost a race: look again at once
        except TimeoutError:
            pass
        except ChuteError as exc:  # BackendUnavailable and anything a broken backend says
            logger.info(
                "settling a submit: the store did not answer; trying again",
                extra={"api": api, "request_id": request_id, "error": str(exc)},
            )
        left = deadline - time.monotonic()
        if left <= 0:
            return Settlement(Settled.UNKNOWN)
        attempt += 1
        await anyio.sleep(min(BACKOFF.delay(attempt), left))


async def _settle_once(
    store: Store, record: RequestRecord, *, error_type: str, message: str, remove: bool
) -> Settlement | None:
    api, request_id = record.api, record.id
    found = await store.read(api, request_id)
    if found is None:
        # Kept long enough to outlive any create still on its way; a tombstone whose id a
        # client holds (``remove=False``) is kept as long as the request would have been.
        expires = record.expires_at if not remove else now() + TOMBSTONE_TTL
        tombstone = msgspec.structs.replace(
            refused(record, error_type=error_type, message=message),
            headers=[],
            expires_at=expires,
        )
        try:
            await store.create(tombstone, _nothing())
        except Conflict:
            return None  # something landed first (our late create?): decide on it
        logger.warning(
            "submit refused: the request was not stored; a tombstone keeps it out",
            extra={"api": api, "request_id": request_id},
        )
        return Settlement(Settled.REFUSED)
    current, version = found
    if not same_submit(current, record):
        return Settlement(Settled.OTHERS, current)
    if is_refused(current):
        return Settlement(Settled.REFUSED, current)
    if current.status is Status.IN_QUEUE and current.attempt == 0 and current.started_at is None:
        # Never received: refuse it, unless a dequeuer takes it meanwhile (the write fails).
        if not await store.write_if(
            refused(current, error_type=error_type, message=message), version
        ):
            return None
        logger.warning(
            "submit refused: the stored request was cancelled before it ran",
            extra={"api": api, "request_id": request_id},
        )
        if remove:
            # Terminal now, so nobody can have received it since; a failure leaves a
            # cancelled record, which is harmless (and expires with the retention).
            try:
                await store.delete(api, request_id)
            except ChuteError:
                logger.info(
                    "a refused record could not be removed; it stays cancelled",
                    extra={"api": api, "request_id": request_id},
                )
        return Settlement(Settled.REFUSED, current)
    return Settlement(Settled.RUNS, current)
