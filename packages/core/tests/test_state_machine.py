"""The state machine every store enforces (chute.lifecycle)."""

from __future__ import annotations

import msgspec
import pytest

from chute.errors import TransitionRejected
from chute.lifecycle import apply_transition, queue_deadline_passed
from chute.protocol import RequestRecord, Status


def record(status: Status, attempt: int = 0) -> RequestRecord:
    return RequestRecord(
        id="abc", api="a", status=status, created_at=1.0, expires_at=2.0, attempt=attempt
    )


def test_start_needs_a_newer_attempt() -> None:
    started = apply_transition(record(Status.IN_QUEUE), Status.IN_PROGRESS, attempt=1, at=5.0)
    assert (started.status, started.attempt, started.started_at) == (Status.IN_PROGRESS, 1, 5.0)
    with pytest.raises(TransitionRejected):
        apply_transition(started, Status.IN_PROGRESS, attempt=1, at=6.0)


def test_a_superseded_attempt_cannot_finish() -> None:
    taken_over = record(Status.IN_PROGRESS, attempt=2)
    with pytest.raises(TransitionRejected, match="superseded"):
        apply_transition(taken_over, Status.COMPLETED, attempt=1, at=6.0)
    done = apply_transition(taken_over, Status.COMPLETED, attempt=2, at=6.0)
    assert done.finished_at == 6.0


@pytest.mark.parametrize(
    "terminal", [Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.EXPIRED]
)
@pytest.mark.parametrize("to", list(Status))
def test_terminal_records_never_change(terminal: Status, to: Status) -> None:
    with pytest.raises(TransitionRejected):
        apply_transition(record(terminal, attempt=1), to, attempt=2, at=1.0)


def test_status_never_goes_back_to_queue_from_nowhere() -> None:
    with pytest.raises(TransitionRejected):
        apply_transition(record(Status.IN_QUEUE), Status.COMPLETED, attempt=0, at=1.0)


def test_queue_deadline_applies_only_before_the_first_start() -> None:
    queued = msgspec.structs.replace(record(Status.IN_QUEUE), queue_deadline=10.0)
    assert not queue_deadline_passed(queued, None, at=9.9)
    assert queue_deadline_passed(queued, None, at=10.0)
    # The API's limit counts from created_at (1.0) when the request set none of its own.
    assert queue_deadline_passed(record(Status.IN_QUEUE), 5.0, at=6.0)
    assert not queue_deadline_passed(record(Status.IN_QUEUE), None, at=1e12)
    # A retry waits in the queue again but has run once: it never expires.
    retried = msgspec.structs.replace(queued, started_at=2.0)
    assert not queue_deadline_passed(retried, None, at=1e12)
    assert not queue_deadline_passed(record(Status.IN_PROGRESS), 0.0, at=1e12)
