"""Group commit: calls that arrive while a batch is on its way go together in the next one.

:class:`GroupCommit` turns a batch method (``Store.write_many``, ``Joint.settle_many``, …) into
a per-item call. The first caller lets the tasks that are ready to run now go first (one pass
of the event loop: the workers woken by the same burst of answers add their items), then
sends what is pending; a lone request never waits for company beyond that pass. Callers that
arrive while that call is in flight queue up, and the next call takes all of them (up to
``max_batch``). The window of a batch is thus the time the previous one took, and it closes
as soon as nothing else is ready.

The call that carries a batch runs shielded from cancellation (every backend call is bounded
by its own timeouts): the other callers of the batch depend on its outcome. A caller
cancelled while it waits leaves the queue if its item was not sent yet.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None
        #: Made only when the caller has to wait (a lone caller leads at once and never does).
        self.wake: anyio.Event | None = None

    def set(self) -> None:
        if self.wake is not None:
            self.wake.set()


class GroupCommit(Generic[T, R]):
    """Per-item calls of ``run``, a batch method that returns one result per item in order
    (or raises for the whole batch: each caller of that batch gets the exception)."""

    def __init__(self, run: Callable[[Sequence[T]], Awaitable[Sequence[R]]], max_batch: int):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.max_batch = max_batch
        self._pending: deque[_Slot[T, R]] = deque()
        self._running = False
        #: Batches run and items carried, for tests and metrics.
        self.batches = 0
        self.items = 0

    async def __call__(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        self._pending.append(slot)
        try:
            while not slot.done:
                if self._running:
                    wake = slot.wake = anyio.Event()
                    await wake.wait()
                else:
                    await self._lead()
        finally:
            if not slot.done:  # cancelled while waiting: not sent, never will be
                with contextlib.suppress(ValueError):
                    self._pending.remove(slot)
                if not self._running and self._pending:
                    self._pending[0].set()  # it may have been woken to lead: pass it on
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    async def _lead(self) -> None:
        """Run one batch of what is pending now, then hand the lead to the next waiter."""
        self._running = True
        batch: list[_Slot[T, R]] = []
        try:
            # The window: the tasks that are ready to run now (workers whose container just
            # answered in the same wake-up) add their items before the batch leaves. A lone
            # caller waits one pass of the event loop, nothing more.
            # (A leader cancelled here leaves before taking anything; the next waiter leads.)
            await anyio.lowlevel.checkpoint()
            batch = [
                self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))
            ]
            with anyio.CancelScope(shield=True):
                try:
                    results = await self._run([slot.item for slot in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(
                            f"a batch of {len(batch)} returned {len(results)} results"
                        )
                except Exception as exc:
                    for slot in batch:
                        slot.error = exc
                else:
                    for slot, result in zip(batch, results, strict=True):
                        slot.result = result
            self.batches += 1
            self.items += len(batch)
        finally:
            for slot in batch:
                if slot.error is None and not slot.done and slot.result is None:
                    slot.error = RuntimeError("the batch was interrupted")
                slot.done = True
                slot.set()
            self._running = False
            if self._pending:
                self._pending[0].set()  # the next batch: led by its first waiter
