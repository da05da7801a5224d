"""The request state machine, enforced once here for every store.

```
in_queue ──► in_progress ──► completed
   │  ▲            │ ├──────► failed
   │  └── retry ───┘ └──────► cancelled
   ├──────────────────────────► cancelled
   └──────────────────────────► expired
```

Stores do not re-implement these rules: ``Store.transition`` reads the record, calls
:func:`apply_transition`, and writes the new record back with the backend's own conditional
write (a transaction, a Lua compare-and-set, an S3/GCS precondition). A status therefore never
goes backwards, a terminal record is never overwritten, and a worker whose lease lapsed cannot
overwrite the outcome of the attempt that took over (``attempt`` is a fencing token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from chute.errors import TransitionRejected
from chute.protocol import EXTRA_DEAD_LETTERED, ErrorInfo, RequestRecord, Status

#: Where each non-terminal status may go next.
ALLOWED: dict[Status, frozenset[Status]] = {
    Status.IN_QUEUE: frozenset({Status.IN_PROGRESS, Status.CANCELLED, Status.EXPIRED}),
    Status.IN_PROGRESS: frozenset(
        {
            Status.IN_PROGRESS,  # a new delivery takes over after the previous lease lapsed
            Status.IN_QUEUE,  # released for a retry
            Status.COMPLETED,
            Status.FAILED,
            Status.CANCELLED,
        }
    ),
}

#: ``RequestRecord.extra`` key: the attempt a dead letter was requeued at. Retries count the
#: attempts after it, so a requeue gives the request a fresh ``retries.max_attempts``.
EXTRA_REQUEUE_BASE = "requeue_base_attempt"

#: Moves made by whoever holds the current delivery; they must name its attempt.
_FENCED = frozenset({Status.IN_QUEUE, Status.COMPLETED, Status.FAILED})


def apply_transition(
    record: RequestRecord,
    to: Status,
    *,
    attempt: int | None,
    at: float,
    error: ErrorInfo | None = None,
    extra: Mapping[str, Any] | None = None,
) -> RequestRecord:
    """Return ``record`` moved to ``to``, or raise TransitionRejected.

    * ``to=in_progress`` needs a delivery ``attempt`` newer than the record's: it starts a new
      attempt (from ``in_queue``, or taking over an ``in_progress`` whose lease lapsed).
    * ``in_queue`` (retry), ``completed`` and ``failed`` need the record's current attempt.
    * ``cancelled`` and ``expired`` are not fenced: anyone may cancel or expire a live request.

    ``extra`` is merged into ``record.extra`` with the move (for example ``dead_lettered``).
    """
    current = record.status
    if to not in ALLOWED.get(current, frozenset()):
        raise TransitionRejected(
            f"request {record.id}: cannot go from {current.value} to {to.value}"
        )
    changes: dict[str, object] = {"status": to}
    if to is Status.IN_PROGRESS:
        if attempt is None or attempt <= record.attempt:
            raise TransitionRejected(
                f"request {record.id}: attempt {attempt} is not newer than {record.attempt}"
            )
        changes.update(attempt=attempt, started_at=at, error=None)
    elif to in _FENCED and current is Status.IN_PROGRESS and attempt != record.attempt:
        raise TransitionRejected(
            f"request {record.id}: attempt {attempt} was superseded by {record.attempt}"
        )
    if to.terminal:
        changes["finished_at"] = at
    if error is not None:
        changes["error"] = error
    if extra:
        changes["extra"] = {**record.extra, **extra}
    return msgspec.structs.replace(record, **changes)


def apply_requeue(record: RequestRecord, *, at: float) -> RequestRecord:
    """Return a dead-lettered ``failed`` record back in ``in_queue``, or raise TransitionRejected.

    The one exception to "terminal records never change": an operator's explicit requeue of a
    dead letter (``chute dead-letter requeue``). Only a record whose message went to the dead
    letter qualifies. The attempt is kept, and the queue keeps counting deliveries of the
    requeued message, so its next delivery is newer than the record's attempt and the fencing
    still holds. The last error stays visible until the next attempt starts.
    """
    if record.status is not Status.FAILED or not record.extra.get(EXTRA_DEAD_LETTERED):
        raise TransitionRejected(
            f"request {record.id}: only a failed, dead-lettered request can be requeued "
            f"(it is {record.status.value})"
        )
    extra = {k: v for k, v in record.extra.items() if k != EXTRA_DEAD_LETTERED}
    extra["requeued_at"] = at
    extra[EXTRA_REQUEUE_BASE] = record.attempt  # the retry budget starts again from here
    return msgspec.structs.replace(record, status=Status.IN_QUEUE, finished_at=None, extra=extra)


def queue_deadline_passed(record: RequestRecord, api_limit: float | None, *, at: float) -> bool:
    """Whether a request is still waiting for its first start past its queue deadline: the
    record's own (set at submit), else ``created_at`` + the API's ``deadlines.queue``
    (``api_limit``). A request that already ran once (a retry, a requeued dead letter) is past
    the queue and never expires. The gateway (on read) and the dequeuer (at pickup) both ask."""
    if record.status is not Status.IN_QUEUE or record.started_at is not None:
        return False
    deadline = record.queue_deadline
    if deadline is None and api_limit is not None:
        deadline = record.created_at + api_limit
    return deadline is not None and at >= deadline


def start_on_receive(
    record: RequestRecord, attempt: int, *, api_limit: float | None, at: float
) -> RequestRecord | None:
    """The record a receive of delivery ``attempt`` at ``at`` starts (``Joint.receive(start=
    True)``), or None when the receive must leave it to the dequeuer's own path (missing
    from retention, terminal, an attempt not newer than the record's, still queued past its
    queue deadline: dropped, expired or not started there). The reference a backend that
    starts in its receive script agrees with (``JointContract``)."""
    if record.expires_at <= at or record.status not in (Status.IN_QUEUE, Status.IN_PROGRESS):
        return None
    if attempt <= record.attempt or queue_deadline_passed(record, api_limit, at=at):
        return None
    return apply_transition(record, Status.IN_PROGRESS, attempt=attempt, at=at)
