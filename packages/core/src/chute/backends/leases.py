"""The leases this process holds on queue messages, for queues whose receipt handles are no
fence: SQS (chute-sqs) and Pub/Sub (chute-gcs).

SQS answers a stale receipt handle inconsistently: AWS accepts DeleteMessage with an old handle
(it may or may not delete), and ChangeMessageVisibility fails only once the message is not in
flight; moto accepts any handle the message ever had. Pub/Sub silently ignores an ack or a
modifyAckDeadline with a stale ack id (outside exactly-once subscriptions). So "is this still
my lease?" is decided here, from what the process knows for sure: when its lease ends. Each
lease's end is counted from the moment *before* the request that set it was sent, so it never
ends later than the backend's own visibility timeout or ack deadline; once it has passed (or
the message was settled), the holder has lost it. The short window where a call is in flight
while the lease runs out is covered by the store's attempt fencing, which is what protects
results in every backend.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from enum import Enum
from typing import Final

#: Receipts remembered at most (live leases plus recently settled ones); the oldest go first.
MAX_TRACKED: Final = 100_000


class LeaseState(Enum):
    HELD = "held"
    LAPSED = "lapsed"
    SETTLED = "settled"
    UNKNOWN = "unknown"


class LeaseBook:
    """Receipt handle (or ack id) → the monotonic time its lease ends, or settled."""

    def __init__(self) -> None:
        self._ends: OrderedDict[str, float | None] = OrderedDict()

    def held(self, receipt: str, started: float, lease: float) -> None:
        """``receipt``'s lease runs ``lease`` seconds from ``started`` (time.monotonic)."""
        self._ends[receipt] = started + lease
        self._ends.move_to_end(receipt)
        while len(self._ends) > MAX_TRACKED:
            self._ends.popitem(last=False)

    def settled(self, receipt: str) -> None:
        """The message was acked, dead-lettered or released: the receipt is spent."""
        if receipt in self._ends:
            self._ends[receipt] = None

    def state(self, receipt: str) -> LeaseState:
        """What this process knows about ``receipt``'s lease right now."""
        if receipt not in self._ends:
            return LeaseState.UNKNOWN  # received elsewhere: the backend's answer is all there is
        end = self._ends[receipt]
        if end is None:
            return LeaseState.SETTLED
        return LeaseState.HELD if time.monotonic() < end else LeaseState.LAPSED
