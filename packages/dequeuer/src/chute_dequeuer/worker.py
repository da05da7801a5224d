"""The workers: take a message, hold its lease, call the container, store the outcome, ack.

``workers`` tasks (``pod.max_concurrency``) each loop: wait until the container is ready,
take one message (blocking on the backend's wake-up, never sleeping), then handle it:

1. read the record; missing or terminal → ack and drop (the container never sees it); still
   queued past its queue deadline → ``expired``, ack (the container never sees it either);
2. ``in_queue``/``in_progress`` → ``in_progress`` for this delivery's attempt (the fencing
   token: a late duplicate cannot overwrite a newer attempt's outcome);
3. POST it to the container, cut after the execution timeout if there is one, while the
   dequeuer's one lease watcher extends the lease every ``lease / 3`` seconds and reads the
   record every second: if the lease is lost or the request was cancelled, the call is
   abandoned (its connection closed);
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

The rooms: this module is the loop (:class:`Dispatcher`: receiving, handing over, handling
and calling the container); :mod:`chute_dequeuer.settling` stores outcomes and settles
messages (4, 5 and the group commits); :mod:`chute_dequeuer.watcher` is the lease watcher
(3); :mod:`chute_dequeuer.jobs` holds what is known about one delivery (:class:`Job`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator

import anyio

from chute.backends.base import Delivery, Queue, Received, Store
from chute.config import API
from chute.errors import ChuteError, InvalidRequestId, NotFound, TransitionRejected
from chute.lifecycle import queue_deadline_passed
from chute.protocol import EXTRA_RESULT_TYPE, ErrorInfo, RequestRecord, Status, now
from chute.webhooks import WebhookSender
from chute_dequeuer.container import CallResult, ContainerClient
from chute_dequeuer.jobs import Job, RequestLog
from chute_dequeuer.metrics import Metrics
from chute_dequeuer.probes import Readiness
from chute_dequeuer.retry import Outage
from chute_dequeuer.settling import GIVE_BACK_TIMEOUT, SETTLE_TIMEOUT, Settler
from chute_dequeuer.watcher import WATCH_INTERVAL, LeaseWatcher

__all__ = [
    "ERROR_RETRY_DELAY",
    "GIVE_BACK_TIMEOUT",
    "RECEIVE_WAIT",
    "SETTLE_TIMEOUT",
    "WATCH_INTERVAL",
    "Dispatcher",
    "Job",
    "RequestLog",
]

log = logging.getLogger("chute_dequeuer.worker")

#: Long-poll wait of one receive; the call returns as soon as a message is there.
RECEIVE_WAIT = 20.0
#: Redelivery delay after an unexpected error, so a bug cannot spin at full speed.
ERROR_RETRY_DELAY = 5.0


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
        #: Outcomes stored and messages settled (group commit where the backends batch).
        self.settler = Settler(
            api=api,
            queue=queue,
            store=store,
            joint=self.joint,
            metrics=metrics,
            outage=outage,
            workers=workers,
            webhooks=webhooks,
        )
        #: One watcher for every job in flight: leases extended, cancellations noticed.
        self.watcher = LeaseWatcher(
            queue=queue, store=store, metrics=metrics, lease=lease, jobs=self._jobs
        )
        readiness.subscribe(self._on_readiness)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    async def run(self) -> None:
        """Run the workers until :meth:`stop_receiving` and their last job are done."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.watcher.run)
                async with anyio.create_task_group() as workers:
                    for _ in range(self.workers):
                        workers.start_soon(self._worker)
                tg.cancel_scope.cancel()  # the watcher, once no worker is left
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
            deliveries: list[tuple[Delivery, Received | None]]
            if self._handoff and self.readiness.ready:
                # Handed over by the worker that received it: nothing to wait for.
                deliveries = [self._handoff.popleft()]
            else:
                deliveries = await self._wait_for_work()
            if self.stopping or not self.readiness.ready:
                # Received for workers that stopped waiting: given back below, untouched.
                while self._handoff:
                    deliveries.append(self._handoff.popleft())
            for delivery, received in deliveries:
                if self.stopping or not self.readiness.ready:
                    # Received in the instant pulling stopped: hand it back untouched.
                    job = Job(delivery)
                    job.log.info("not ready or stopping; message released")
                    await self.settler.give_back(job)
                    self.metrics.handled("released")
                else:
                    await self._process(delivery, received)

    async def _wait_for_work(self) -> list[tuple[Delivery, Received | None]]:
        """Wait until ready, then take a message; interruptible while idle (readiness lost,
        stop): then nothing is returned."""
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
        return deliveries

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

    async def _process(self, delivery: Delivery, received: Received | None = None) -> None:
        job = Job(delivery, received)
        self.watcher.watch(job)  # in self._jobs from now on
        self.metrics.in_flight.inc()
        outcome: str | None = None
        try:
            with job.scope:
                outcome = await self._handle_safely(job)
            if outcome is None:
                if job.lease_lost:
                    outcome = "lease_lost"
                else:  # aborted by shutdown after the grace period
                    job.log.warning("grace period over; request given back to the queue")
                    await self.settler.give_back(job)
                    outcome = "released"
        finally:
            self._jobs.discard(job)
            self.metrics.in_flight.dec()
            self.metrics.handled(outcome or "released")

    async def _handle_safely(self, job: Job) -> str:
        try:
            return await self._handle(job)
        except Exception:
            # A bug must not kill the worker or lose the message: log it and retry later.
            job.log.exception("unexpected error; request given back to the queue")
            await self.settler.give_back(job, delay=ERROR_RETRY_DELAY)
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
            return await self.settler.drop(job)
        if found is None:
            job.log.warning("record missing or expired; dropped without calling the container")
            return await self.settler.drop(job)
        job.held = found
        record = found[0]
        if record.status.terminal:
            job.log.info(
                "record already %s; dropped without calling the container", record.status.value
            )
            return await self.settler.drop(job)
        if self._queue_deadline_passed(record):
            return await self.settler.expire(job)

        try:
            job.held = await self.outage.call(
                "start",
                lambda: self.store.transition_versioned(
                    d.api,
                    d.request_id,
                    Status.IN_PROGRESS,
                    attempt=d.attempt,
                    current=job.held,
                    write=self.settler.batched_write,
                ),
            )
            record = job.held[0]
        except NotFound:
            job.log.warning("record vanished before it started; dropped")
            return await self.settler.drop(job)
        except TransitionRejected as exc:
            return await self.settler.not_started(job, exc)
        job.started = True
        job.log.info("processing request")

        result = await self._call(job, record)
        if job.cancelled:
            # The record says cancelled (whoever cancelled it made the move): nothing to store.
            await self.settler.ack(job)
            return "cancelled"
        if result.status_code is not None:
            self.metrics.observe_call(result.status_code, result.seconds)
        if result.error is None:
            # A result that is not JSON (results.content_type: any) keeps its type.
            extra = (
                None if result.content_type is None else {EXTRA_RESULT_TYPE: result.content_type}
            )
            return await self.settler.finish(
                job, Status.COMPLETED, result=result.result, took=result, extra=extra
            )
        self.metrics.failures.labels(reason=result.error.type).inc()
        return await self.settler.failed(job, record, result.error, took=result)

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

    def _payload(self, job: Job) -> bytes | AsyncIterator[bytes]:
        """The payload: as it came with a joint receive, else streamed from the store."""
        d = job.delivery
        if job.received is not None and job.received.payload is not None:
            return job.received.payload
        return self.store.payload(d.api, d.request_id)

    @property
    def _execution_timeout(self) -> float | None:
        return self.config.deadlines.execution_seconds

    def _queue_deadline_passed(self, record: RequestRecord) -> bool:
        return queue_deadline_passed(record, self.config.deadlines.queue_seconds, at=now())
