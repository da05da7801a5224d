"""The state machine every store enforces (chute.lifecycle)."""

from __future__ import annotations

import pytest

from chute.errors import TransitionRejected
from chute.lifecycle import apply_transition
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
