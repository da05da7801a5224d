"""The dead letter of a queue that can only be read by receiving from it (SQS, Pub/Sub).

Such a backend lists, requeues and purges its dead letters the same way: *scan* them (receive
every one, up to :attr:`ScannedDeadLetters.scan_limit`, each hidden for a while), act on the
chosen ones, and *let the rest go* at once so they are visible again. This mixin holds that
once; a backend supplies the four steps that talk to its service.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from chute.backends.base import DeadLetter
from chute.protocol import validate_request_id


@dataclass(frozen=True)
class ScannedLetter:
    """A dead letter a scan holds (hidden) until it is acted on or let go."""

    letter: DeadLetter
    #: What the service calls the held message: an SQS receipt handle, a Pub/Sub ack id.
    handle: str
    #: When the message was sent to the dead letter queue (ties in ``dead_at`` sort by it).
    sent_at: float


class ScannedDeadLetters(abc.ABC):
    """``list_dead``, ``requeue_dead`` and ``purge_dead`` built on scanning (see the module)."""

    #: The most dead letters one scan holds; larger dead letters are worked in rounds.
    scan_limit: int = 5000

    @abc.abstractmethod
    async def _scan_dead(self, api: str) -> list[ScannedLetter]:
        """Receive every dead letter of ``api`` (up to :attr:`scan_limit`), each held hidden."""

    @abc.abstractmethod
    async def _let_go(self, api: str, scanned: list[ScannedLetter]) -> None:
        """Make ``scanned`` visible again at once, untouched."""

    @abc.abstractmethod
    async def _remove(self, api: str, scanned: list[ScannedLetter]) -> None:
        """Delete ``scanned`` from the dead letter queue."""

    @abc.abstractmethod
    async def _resend(self, api: str, scanned: list[ScannedLetter]) -> None:
        """Send ``scanned``'s requests to the live queue again, their attempts carried along
        (so the next delivery is attempt + 1)."""

    async def list_dead(self, api: str, *, limit: int = 100) -> list[DeadLetter]:
        if limit < 1:
            return []
        scanned = await self._scan_dead(api)
        await self._let_go(api, scanned)
        scanned.sort(key=lambda s: (s.letter.dead_at, s.sent_at))
        return [s.letter for s in scanned[:limit]]

    async def requeue_dead(self, api: str, request_ids: Sequence[str] | None = None) -> int:
        wanted = {validate_request_id(i) for i in request_ids} if request_ids is not None else None
        if wanted is not None and not wanted:
            return 0
        moved = 0
        while True:
            scanned = await self._scan_dead(api)
            chosen = [s for s in scanned if wanted is None or s.letter.request_id in wanted]
            taken = {s.handle for s in chosen}
            await self._let_go(api, [s for s in scanned if s.handle not in taken])
            await self._resend(api, chosen)
            await self._remove(api, chosen)
            moved += len(chosen)
            if wanted is not None or len(scanned) < self.scan_limit:
                return moved

    async def purge_dead(self, api: str) -> int:
        purged = 0
        while True:
            scanned = await self._scan_dead(api)
            await self._remove(api, scanned)
            purged += len(scanned)
            if len(scanned) < self.scan_limit:
                return purged
