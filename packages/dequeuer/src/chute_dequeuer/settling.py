"""Settling a request: its outcome stored under the state machine, then its message acked,
released for a retry or moved to the dead letter, and the webhook sent; where the backends
batch, writes, settles and acks go by group commit (``chute.backends.batching``)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import anyio

from chute.backends.base import (
    AckingWrite,
    Delivery,
    Joint,
    Queue,
    Settle,
    Settled,
    Store,
    Write,
    WriteNext,
)
from chute.backends.batching import GroupCommit
from chute.config import API
from chute.errors import ChuteError, LeaseLost, NotFound, TransitionRejected
from chute.lifecycle import EXTRA_REQUEUE_BASE
from chute.protocol import EXTRA_DEAD_LETTERED, ErrorInfo, RequestRecord, Status
from chute.webhooks import WebhookSender
from chute_dequeuer.container import CallResult
from chute_dequeuer.jobs import Job
from chute_dequeuer.metrics import Metrics
from chute_dequeuer.retry import Outage

#: How long giving a message back may take during shutdown or after an error.
GIVE_BACK_TIMEOUT = 5.0
#: How long storing an outcome and settling its message (ack or dead letter, webhook) may
#: take once begun. It runs shielded: a lease loss or the end of the grace period must not
#: cut it between the stored outcome and the ack, or the webhook and the dead-letter entry
#: would be lost (the redelivery finds a terminal record and only drops it).
SETTLE_TIMEOUT = 15.0


class Settler:
    """Stores outcomes and settles messages for one API's dispatcher."""

    def __init__(
        self,
        *,
        api: API,
        queue: Queue,
        store: Store,
        joint: Joint | None,
        metrics: Metrics,
        outage: Outage,
        workers: int,
        webhooks: WebhookSender | None,
    ) -> None:
        self.config = api
        self.queue = queue
        self.store = store
        self.joint = joint
        self.metrics = metrics
        self.outage = outage
        self.webhooks = webhooks
        #: Group commit of starts and outcomes, where the backend writes batches natively.
        self._writes: GroupCommit[Write, object | None] | None = None
        if store.max_batch > 1:
            self._writes = GroupCommit(self._write_many, min(store.max_batch, workers))
        self._settles: GroupCommit[Settle, Settled] | None = None
        if self.joint is not None and self.joint.max_batch > 1:
            self._settles = GroupCommit(self._settle_many, min(self.joint.max_batch, workers))
        #: Acks by group commit where the queue batches them and nothing acks with the write.
        self._acks: GroupCommit[Delivery, bool] | None = None
        if self.joint is None and queue.max_batch > 1:
            self._acks = GroupCommit(self._ack_many, min(queue.max_batch, workers))

    async def _write_many(self, writes: Sequence[Write]) -> list[object | None]:
        self.metrics.batch("write", len(writes))
        return await self.store.write_many(writes)

    async def _ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        self.metrics.batch("ack", len(deliveries))
        return await self.queue.ack_many(deliveries)

    async def _settle_many(self, settles: Sequence[Settle]) -> list[Settled]:
        assert self.joint is not None
        self.metrics.batch("settle", len(settles))
        return await self.joint.settle_many(settles)

    async def _write(
        self, record: RequestRecord, version: object, result: bytes | None
    ) -> object | None:
        """``Store.write_next`` through the group commit (``self._writes`` is set)."""
        assert self._writes is not None
        return await self._writes(Write(record, version, result))

    @property
    def batched_write(self) -> WriteNext | None:
        """The write a move passes as ``write=``: batched where the store batches."""
        return self._write if self._writes is not None else None

    async def expire(self, job: Job) -> str:
        with anyio.move_on_after(SETTLE_TIMEOUT, shield=True):
            return await self._expire_unshielded(job)
        return self._unsettled(job)

    def _unsettled(self, job: Job) -> str:
        job.log.warning("storing the outcome took too long; the message returns with its lease")
        return "unsettled"

    async def _expire_unshielded(self, job: Job) -> str:
        d = job.delivery
        try:
            record = await self.outage.call(
                "expire",
                lambda: self.store.transition(
                    d.api, d.request_id, Status.EXPIRED, current=job.held
                ),
            )
        except (NotFound, TransitionRejected) as exc:
            job.log.info("not expired: %s; dropped", exc)
            return await self.drop(job)
        job.log.warning("queue deadline passed; expired without calling the container")
        await self.ack(job)
        self._notify(record)
        return "expired"

    async def failed(
        self, job: Job, record: RequestRecord, error: ErrorInfo, *, took: CallResult
    ) -> str:
        """Route a failed attempt: retry later, or fail for good (dead letter or not)."""
        d = job.delivery
        retries = self.config.retries
        if not retries.retries(error.type, error.status_code):
            # Not worth retrying (bad input, a broken answer): failed, acked, no dead letter.
            return await self.finish(job, Status.FAILED, error=error, took=took)
        # Attempts since the last requeue from the dead letter, which gives a fresh budget.
        used = d.attempt - int(record.extra.get(EXTRA_REQUEUE_BASE, 0))
        if used >= retries.max_attempts:
            if not self.queue.supports_dead_letter:
                # Nowhere to park it (the queue declares no dead letter): failed for good,
                # acked like a non-retryable failure, and said so.
                job.log.warning(
                    "retries exhausted and the queue has no dead letter: failed and acked",
                    extra={"queue": type(self.queue).__name__},
                )
                return await self.finish(job, Status.FAILED, error=error, took=took)
            reason = f"{error.type}: {error.message}"
            return await self.finish(
                job,
                Status.FAILED,
                error=error,
                took=took,
                extra={EXTRA_DEAD_LETTERED: True},
                dead_letter=reason,
            )
        delay = retries.backoff(used)
        try:
            await self.outage.call(
                "retry",
                lambda: self.store.transition(
                    d.api,
                    d.request_id,
                    Status.IN_QUEUE,
                    attempt=d.attempt,
                    error=error,
                    current=job.held,
                ),
            )
        except NotFound:
            job.log.warning("record vanished before its retry; dropped")
            return await self.drop(job)
        except TransitionRejected as exc:
            job.log.warning("not retried: %s", exc)  # cancelled, or a newer attempt runs
            await self.ack(job)
            return "superseded"
        job.log.warning(
            "attempt failed; retrying",
            extra={
                "error_type": error.type,
                "error": error.message,
                "status_code": error.status_code,
                "delay": round(delay, 3),
                "attempts_left": retries.max_attempts - used,
            },
        )
        try:
            await self.outage.call("release", lambda: self.queue.release(d, delay=delay))
        except LeaseLost:
            job.log.info("release skipped: the message was delivered again meanwhile")
        return "retried"

    async def not_started(self, job: Job, exc: TransitionRejected) -> str:
        d = job.delivery
        current = await self.outage.call("read", lambda: self.store.get(d.api, d.request_id))
        if current is None or current.status.terminal:
            job.log.info("record finished meanwhile; dropped", extra={"reason": str(exc)})
            return await self.drop(job)
        # A newer attempt owns the record: leave this message to its lease, never ack it.
        job.log.warning("not started: %s; message left to its lease", exc)
        return "superseded"

    async def finish(
        self,
        job: Job,
        to: Status,
        *,
        took: CallResult,
        result: bytes | None = None,
        error: ErrorInfo | None = None,
        extra: dict[str, Any] | None = None,
        dead_letter: str | None = None,
    ) -> str:
        """Store the terminal outcome, then settle the message: ack it, or move it to the
        dead letter with ``dead_letter`` as the reason; then send the webhook. Shielded and
        bounded (``SETTLE_TIMEOUT``), so nothing cuts it between the outcome and the ack."""
        with anyio.move_on_after(SETTLE_TIMEOUT, shield=True):
            return await self._finish_unshielded(
                job,
                to,
                took=took,
                result=result,
                error=error,
                extra=extra,
                dead_letter=dead_letter,
            )
        return self._unsettled(job)

    async def _finish_unshielded(
        self,
        job: Job,
        to: Status,
        *,
        took: CallResult,
        result: bytes | None,
        error: ErrorInfo | None,
        extra: dict[str, Any] | None,
        dead_letter: str | None,
    ) -> str:
        d = job.delivery
        # Joint backends ack in the same step as the write (not a dead letter: that settles
        # the message differently).
        acking: AckingWrite | None = None
        if self.joint is not None and dead_letter is None:
            if self._settles is not None:
                acking = _GroupAcking(self._settles, d)
            else:
                acking = self.joint.acking(d)
        write: WriteNext | None = acking if acking is not None else self.batched_write
        try:
            record, _ = await self.outage.call(
                "finish",
                lambda: self.store.transition_versioned(
                    d.api,
                    d.request_id,
                    to,
                    attempt=d.attempt,
                    result=result,
                    error=error,
                    extra=extra,
                    current=job.held,
                    write=write,
                ),
            )
        except NotFound:
            job.log.warning("record vanished before its outcome was stored; dropped")
            return await self.drop(job)
        except TransitionRejected as exc:
            # Cancelled meanwhile, or a newer attempt took over: its outcome stands, not ours.
            job.log.warning("outcome not stored: %s", exc)
            await self.ack(job)
            return "superseded"
        fields: dict[str, Any] = {"seconds": round(took.seconds, 6)}
        if took.status_code is not None:
            fields["status_code"] = took.status_code
        if error is not None:
            fields.update(error_type=error.type, error=error.message)
            if dead_letter is not None:
                fields["dead_letter"] = True
            job.log.warning("request failed", extra=fields)
        else:
            job.log.info("request completed", extra=fields)
        if dead_letter is not None:
            await self._dead_letter(job, dead_letter)
        elif acking is None:
            await self.ack(job)
        elif not acking.acked:
            job.log.info("ack skipped: the message was delivered again meanwhile")
        self._notify(record, result)
        return "dead_lettered" if dead_letter is not None else to.value

    def _notify(self, record: RequestRecord, result: bytes | None = None) -> None:
        if self.webhooks is not None:
            self.webhooks.notify(self.store, self.config, record, result)

    async def _dead_letter(self, job: Job, reason: str) -> None:
        try:
            await self.outage.call(
                "dead_letter", lambda: self.queue.dead_letter(job.delivery, reason)
            )
        except LeaseLost:
            job.log.info("dead letter skipped: the message was delivered again meanwhile")

    async def drop(self, job: Job) -> str:
        await self.ack(job)
        return "dropped"

    async def ack(self, job: Job) -> None:
        acks = self._acks
        try:
            if acks is None:
                await self.outage.call("ack", lambda: self.queue.ack(job.delivery))
            elif not await self.outage.call("ack", lambda: acks(job.delivery)):
                raise LeaseLost(job.delivery.request_id)
        except LeaseLost:
            job.log.info("ack skipped: the message was delivered again meanwhile")

    async def give_back(self, job: Job, *, delay: float = 0.0) -> None:
        """Release the message (and put the record back to ``in_queue`` if this delivery
        started it), shielded from cancellation and bounded in time."""
        d = job.delivery
        with anyio.move_on_after(GIVE_BACK_TIMEOUT, shield=True):
            if job.started:
                # Finished or taken over meanwhile: then there is nothing to put back.
                with contextlib.suppress(NotFound, TransitionRejected):
                    await self.outage.call(
                        "requeue",
                        lambda: self.store.transition(
                            d.api, d.request_id, Status.IN_QUEUE, attempt=d.attempt
                        ),
                    )
            try:
                await self.outage.call("release", lambda: self.queue.release(d, delay=delay))
            except LeaseLost:
                pass  # already delivered again: not ours to release
            except ChuteError as exc:
                job.log.warning(
                    "release failed; the message returns when its lease lapses",
                    extra={"error": str(exc)},
                )


class _GroupAcking(AckingWrite):
    """A joint acking write that goes through the group commit of ``Joint.settle_many``."""

    def __init__(self, settles: GroupCommit[Settle, Settled], delivery: Delivery) -> None:
        self.settles = settles
        self.delivery = delivery

    async def __call__(
        self, record: RequestRecord, version: object, result: bytes | None
    ) -> object | None:
        settled = await self.settles(Settle(self.delivery, record, version, result))
        self.acked = settled.acked
        return settled.version
