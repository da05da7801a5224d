"""The workers: take a message, hold its lease, call the container, store the outcome, ack.

``workers`` tasks (``pod.max_concurrency``) each loop: wait until the container is ready,
take one message (blocking on the backend's wake-up, never sleeping), then handle it:

1. read the record; missing or terminal → ack and drop (the container never sees it); still
   queued past its queue deadline → ``expired``, ack (the container never sees it either);
2. ``in_queue``/``in_progress`` → ``in_progress`` for this delivery's attempt (the fencing
   token: a late duplicate cannot overwrite a newer attempt's outcome);
3. POST it to the container, cut after the execution timeout if there is one, while a watch
   extends the lease every ``lease / 3`` seconds and reads the record every second: if the
   lease is lost or the request was cancelled, the call is abandoned (its connection closed);
4. ``completed`` with the result, then ack; or, for a failure: back to ``in_queue`` and a
   delayed release when the API retries it and attempts are left, ``failed`` and the dead
   letter when retries ran out, ``failed`` and ack when it is not worth retrying;
5. a webhook for the terminal status, if one is configured (in the background: it never
   delays the next request).

Batches (when the backends declare them, ``max_batch``): idle workers take turns receiving,
and the one receiving asks for as many messages as there are idle workers (up to the queue's
``max_batch``), handing the rest to the others; starts and outcomes are written by group
commit (``chute.backends.batching``), so the writes of requests that move together share one
call, while a lone request's write goes at once, alone.

Backend outages are retried with backoff (``retry.Outage``) while the lease is held; a message
is acked only after its outcome is stored, so nothing is lost if the dequeuer dies anywhere.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, MutableMapping, Sequence
from typing import Any

import anyio

from chute.backends.base import (
    AckingWrite,
    Delivery,
    Queue,
    Received,
    Settle,
    Settled,
    Store,
    Versioned,
    Write,
    WriteNext,
)
from chute.backends.batching import GroupCommit
from chute.config import API
from chute.errors import ChuteError, InvalidRequestId, LeaseLost, NotFound, TransitionRejected
from chute.lifecycle import EXTRA_REQUEUE_BASE, queue_deadline_passed
from chute.protocol import (
    EXTRA_DEAD_LETTERED,
    EXTRA_RESULT_TYPE,
    ErrorInfo,
    RequestRecord,
    Status,
    now,
)
from chute.webhooks import WebhookSender
from chute_dequeuer.container import CallResult, ContainerClient
from chute_dequeuer.metrics import Metrics
from chute_dequeuer.probes import Readiness
from chute_dequeuer.retry import Outage

log = logging.getLogger("chute_dequeuer.worker")

#: Long-poll wait of one receive; the call returns as soon as a message is there.
RECEIVE_WAIT = 20.0
#: How long giving a message back may take during shutdown or after an error.
GIVE_BACK_TIMEOUT = 5.0
#: How long storing an outcome and settling its message (ack or dead letter, webhook) may
#: take once begun. It runs shielded: a lease loss or the end of the grace period must not
#: cut it between the stored outcome and the ack, or the webhook and the dead-letter entry
#: would be lost (the redelivery finds a terminal record and only drops it).
SETTLE_TIMEOUT = 15.0
#: Redelivery delay after an unexpected error, so a bug cannot spin at full speed.
ERROR_RETRY_DELAY = 5.0
#: How often a running request's record is read to notice a cancellation.
WATCH_INTERVAL = 1.0


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


class Dispatcher:
    """Runs the workers and lets the process stop them: first receiving, then working."""

    def __init__(
        self,
        *,
        api: API,
        queue: Queue,
        store: Store,
        container: ContainerClient,
        readiness: Readiness,
        metrics: Metrics,
        outage: Outage,
        workers: int,
        lease: float,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.config = api
        self.api = api.name
        self.webhooks = webhooks
        self.queue = queue
        self.store = store
        self.container = container
        self.readiness = readiness
        self.metrics = metrics
        self.outage = outage
        self.workers = workers
        self.lease = lease
        self.stopping = False
        self.finished = anyio.Event()
        self._idle: set[anyio.CancelScope] = set()
        self._jobs: set[Job] = set()
        #: Queue and store in one place: receive with the record, store and ack in one step.
        self.joint = store.joint(queue)
        #: Messages received for idle workers other than the one that received them (at most
        #: one receive's worth, never more than the workers waiting for them).
        self._handoff: deque[tuple[Delivery, Received | None]] = deque()
        self._receiving = anyio.Lock()
        self._waiting = 0
        self._receive_batch = max(1, min(queue.max_batch, workers))
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
        readiness.subscribe(self._on_readiness)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    async def run(self) -> None:
        """Run the workers until :meth:`stop_receiving` and their last job are done."""
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.workers):
                    tg.start_soon(self._worker)
        finally:
            self.finished.set()

    def stop_receiving(self) -> None:
        """Take no more work; requests in flight go on."""
        self.stopping = True
        self._interrupt_idle()

    def abort(self) -> None:
        """Stop the requests still in flight; each is given back to the queue at once."""
        self.stop_receiving()
        for job in list(self._jobs):
            job.scope.cancel()

    def _on_readiness(self, ready: bool) -> None:
        if not ready:
            self._interrupt_idle()  # stop pulling while a probe fails

    def _interrupt_idle(self) -> None:
        for scope in list(self._idle):
            scope.cancel()

    # -- the loop -------------------------------------------------------------------------

    async def _worker(self) -> None:
        while not self.stopping:
            deliveries: list[tuple[Delivery, Received | None]] = []
            with anyio.CancelScope() as idle:
                self._idle.add(idle)
                try:
                    await self.readiness.wait_ready()
                    deliveries = await self._take()
                except ChuteError:
                    # Not an outage (those are retried inside): still no reason to die.
                    log.exception("receive failed; retrying in %.0f s", ERROR_RETRY_DELAY)
                    await anyio.sleep(ERROR_RETRY_DELAY)
                finally:
                    self._idle.discard(idle)
            if self.stopping or not self.readiness.ready:
                # Received for workers that stopped waiting: given back below, untouched.
                while self._handoff:
                    deliveries.append(self._handoff.popleft())
            for delivery, received in deliveries:
                if self.stopping or not self.readiness.ready:
                    # Received in the instant pulling stopped: hand it back untouched.
                    job = Job(delivery)
                    job.log.info("not ready or stopping; message released")
                    await self._give_back(job)
                    self.metrics.requests.labels(outcome="released").inc()
                else:
                    await self._process(delivery, received)

    async def _take(self) -> list[tuple[Delivery, Received | None]]:
        """This worker's next message: one handed over by the worker that received it, else
        one from a receive of its own, made for every worker waiting meanwhile (they wait
        their turn on the lock and find theirs handed over)."""
        if self._handoff:
            return [self._handoff.popleft()]
        self._waiting += 1
        try:
            async with self._receiving:
                if self._handoff:
                    return [self._handoff.popleft()]
                wanted = max(1, min(self._waiting, self._receive_batch))
                got = await self.outage.call("receive", lambda: self._receive(wanted))
        finally:
            self._waiting -= 1
        if got:
            self.metrics.batch("receive", len(got))
        self._handoff.extend(got[1:])
        return got[:1]

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

    async def _receive(self, wanted: int) -> list[tuple[Delivery, Received | None]]:
        """One receive of up to ``wanted`` messages (blocking until one comes or the wait
        ends), with the records read along when the backend has a joint fast path."""
        if self.joint is not None:
            received = await self.joint.receive(
                self.api, max_messages=wanted, wait=RECEIVE_WAIT, lease=self.lease
            )
            return [(r.delivery, r) for r in received]
        deliveries = await self.queue.receive(
            self.api, max_messages=wanted, wait=RECEIVE_WAIT, lease=self.lease
        )
        return [(d, None) for d in deliveries]

    async def _write(
        self, record: RequestRecord, version: object, result: bytes | None
    ) -> object | None:
        """``Store.write_next`` through the group commit (``self._writes`` is set)."""
        assert self._writes is not None
        return await self._writes(Write(record, version, result))

    @property
    def _batched_write(self) -> WriteNext | None:
        """The write a move passes as ``write=``: batched where the store batches."""
        return self._write if self._writes is not None else None

    async def _process(self, delivery: Delivery, received: Received | None = None) -> None:
        job = Job(delivery, received)
        self._jobs.add(job)
        self.metrics.in_flight.inc()
        outcome: str | None = None
        try:
            with job.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch, job)
                    outcome = await self._handle_safely(job)
                    tg.cancel_scope.cancel()
            if outcome is None:
                if job.lease_lost:
                    outcome = "lease_lost"
                else:  # aborted by shutdown after the grace period
                    job.log.warning("grace period over; request given back to the queue")
                    await self._give_back(job)
                    outcome = "released"
        finally:
            self._jobs.discard(job)
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(outcome=outcome or "released").inc()

    async def _watch(self, job: Job) -> None:
        """For as long as the job runs: extend the lease every third of it, and while the
        container call runs, read the record every second to notice a cancellation."""
        clock = anyio.current_time
        next_extension = clock() + self.lease / 3
        while True:
            await anyio.sleep(max(0.0, min(WATCH_INTERVAL, next_extension - clock())))
            if clock() >= next_extension:
                next_extension = clock() + self.lease / 3
                if not await self._extend(job):
                    return
            if job.call_scope is not None:
                await self._check_cancelled(job, job.call_scope)

    async def _extend(self, job: Job) -> bool:
        """Extend the lease; False once it is lost (the job is then cancelled)."""
        try:
            await self.queue.extend(job.delivery, self.lease)
        except LeaseLost as exc:
            job.lease_lost = True
            job.log.warning(
                "lease lost; another consumer owns the request now, abandoning this attempt",
                extra={"error": str(exc)},
            )
            job.scope.cancel()
            return False
        except Exception as exc:
            # The next beat retries; the lease has two more beats before it lapses.
            job.log.warning("lease extension failed", extra={"error": repr(exc)})
        else:
            self.metrics.lease_extensions.inc()
        return True

    async def _check_cancelled(self, job: Job, call: anyio.CancelScope) -> None:
        d = job.delivery
        try:
            record = await self.store.get(d.api, d.request_id)
        except Exception as exc:  # an outage: the next look, a second later, tries again
            job.log.debug("cancellation check failed", extra={"error": repr(exc)})
            return
        if record is not None and record.status is not Status.CANCELLED:
            return
        job.cancelled = True
        job.log.info(
            "request %s while the container worked; call abandoned",
            "cancelled" if record is not None else "deleted",
        )
        call.cancel()

    async def _handle_safely(self, job: Job) -> str:
        try:
            return await self._handle(job)
        except Exception:
            # A bug must not kill the worker or lose the message: log it and retry later.
            job.log.exception("unexpected error; request given back to the queue")
            await self._give_back(job, delay=ERROR_RETRY_DELAY)
            return "released"

    async def _handle(self, job: Job) -> str:
        d = job.delivery
        try:
            if job.received is not None:
                found = job.received.found
            else:
                found = await self.outage.call(
                    "read", lambda: self.store.read_live(d.api, d.request_id)
                )
        except InvalidRequestId as exc:
            job.log.error("message is not a valid request id; dropped", extra={"error": str(exc)})
            return await self._drop(job)
        if found is None:
            job.log.warning("record missing or expired; dropped without calling the container")
            return await self._drop(job)
        job.held = found
        record = found[0]
        if record.status.terminal:
            job.log.info(
                "record already %s; dropped without calling the container", record.status.value
            )
            return await self._drop(job)
        if self._queue_deadline_passed(record):
            return await self._expire(job)

        try:
            job.held = await self.outage.call(
                "start",
                lambda: self.store.transition_versioned(
                    d.api,
                    d.request_id,
                    Status.IN_PROGRESS,
                    attempt=d.attempt,
                    current=job.held,
                    write=self._batched_write,
                ),
            )
            record = job.held[0]
        except NotFound:
            job.log.warning("record vanished before it started; dropped")
            return await self._drop(job)
        except TransitionRejected as exc:
            return await self._not_started(job, exc)
        job.started = True
        job.log.info("processing request")

        result = await self._call(job, record)
        if job.cancelled:
            # The record says cancelled (whoever cancelled it made the move): nothing to store.
            await self._ack(job)
            return "cancelled"
        if result.status_code is not None:
            self.metrics.observe_call(result.status_code, result.seconds)
        if result.error is None:
            # A result that is not JSON (results.content_type: any) keeps its type.
            extra = (
                None if result.content_type is None else {EXTRA_RESULT_TYPE: result.content_type}
            )
            return await self._finish(
                job, Status.COMPLETED, result=result.result, took=result, extra=extra
            )
        self.metrics.failures.labels(reason=result.error.type).inc()
        return await self._failed(job, record, result.error, took=result)

    async def _call(self, job: Job, record: RequestRecord) -> CallResult:
        """The container call, cut after the execution timeout (the record's, else the
        API's) and abandoned if the request is cancelled meanwhile."""
        timeout = record.timeout if record.timeout is not None else self._execution_timeout
        scope = anyio.CancelScope()
        if timeout is not None:
            scope.deadline = anyio.current_time() + timeout
        result = CallResult(error=ErrorInfo(type="cancelled", message="the call was abandoned"))
        job.call_scope = scope
        try:
            with scope:
                result = await self.outage.call(
                    "call", lambda: self.container.call(record, self._payload(job))
                )
        except NotFound:
            result = CallResult(
                error=ErrorInfo(
                    type="payload_missing", message="the request's payload is not in the store"
                )
            )
        finally:
            job.call_scope = None
        if scope.cancelled_caught and not job.cancelled and timeout is not None:
            result = CallResult(
                error=ErrorInfo(
                    type="timeout",
                    message=f"the container did not answer within the execution timeout "
                    f"of {timeout:g} s",
                ),
                seconds=timeout,
            )
        return result

    def _payload(self, job: Job) -> AsyncIterator[bytes]:
        """The payload: as it came with a joint receive, else streamed from the store."""
        d = job.delivery
        if job.received is not None and job.received.payload is not None:
            return _once(job.received.payload)
        return self.store.payload(d.api, d.request_id)

    @property
    def _execution_timeout(self) -> float | None:
        return self.config.deadlines.execution_seconds

    def _queue_deadline_passed(self, record: RequestRecord) -> bool:
        return queue_deadline_passed(record, self.config.deadlines.queue_seconds, at=now())

    async def _expire(self, job: Job) -> str:
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
            return await self._drop(job)
        job.log.warning("queue deadline passed; expired without calling the container")
        await self._ack(job)
        self._notify(record)
        return "expired"

    async def _failed(
        self, job: Job, record: RequestRecord, error: ErrorInfo, *, took: CallResult
    ) -> str:
        """Route a failed attempt: retry later, or fail for good (dead letter or not)."""
        d = job.delivery
        retries = self.config.retries
        if not retries.retries(error.type, error.status_code):
            # Not worth retrying (bad input, a broken answer): failed, acked, no dead letter.
            return await self._finish(job, Status.FAILED, error=error, took=took)
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
                return await self._finish(job, Status.FAILED, error=error, took=took)
            reason = f"{error.type}: {error.message}"
            return await self._finish(
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
            return await self._drop(job)
        except TransitionRejected as exc:
            job.log.warning("not retried: %s", exc)  # cancelled, or a newer attempt runs
            await self._ack(job)
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

    async def _not_started(self, job: Job, exc: TransitionRejected) -> str:
        d = job.delivery
        current = await self.outage.call("read", lambda: self.store.get(d.api, d.request_id))
        if current is None or current.status.terminal:
            job.log.info("record finished meanwhile; dropped", extra={"reason": str(exc)})
            return await self._drop(job)
        # A newer attempt owns the record: leave this message to its lease, never ack it.
        job.log.warning("not started: %s; message left to its lease", exc)
        return "superseded"

    async def _finish(
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
        write: WriteNext | None = acking if acking is not None else self._batched_write
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
            return await self._drop(job)
        except TransitionRejected as exc:
            # Cancelled meanwhile, or a newer attempt took over: its outcome stands, not ours.
            job.log.warning("outcome not stored: %s", exc)
            await self._ack(job)
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
            await self._ack(job)
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

    async def _drop(self, job: Job) -> str:
        await self._ack(job)
        return "dropped"

    async def _ack(self, job: Job) -> None:
        acks = self._acks
        try:
            if acks is None:
                await self.outage.call("ack", lambda: self.queue.ack(job.delivery))
            elif not await self.outage.call("ack", lambda: acks(job.delivery)):
                raise LeaseLost(job.delivery.request_id)
        except LeaseLost:
            job.log.info("ack skipped: the message was delivered again meanwhile")

    async def _give_back(self, job: Job, *, delay: float = 0.0) -> None:
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


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
