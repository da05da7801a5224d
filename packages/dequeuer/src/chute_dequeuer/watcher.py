"""The lease watcher: one task for every job in flight of a dequeuer (not one per request)
that extends each job's lease every third of it, and while a job's container call runs, reads
its record every second to notice a cancellation (the call is then abandoned)."""

from __future__ import annotations

import math

import anyio

from chute.backends.base import Queue, Store
from chute.errors import LeaseLost
from chute.protocol import Status
from chute_dequeuer.jobs import Job
from chute_dequeuer.metrics import Metrics

#: How often a running request's record is read to notice a cancellation.
WATCH_INTERVAL = 1.0


class LeaseWatcher:
    """Watches the jobs of ``jobs`` (the dispatcher's set of jobs in flight) while it runs."""

    def __init__(
        self, *, queue: Queue, store: Store, metrics: Metrics, lease: float, jobs: set[Job]
    ) -> None:
        self.queue = queue
        self.store = store
        self.metrics = metrics
        self.lease = lease
        self.jobs = jobs
        #: Wakes the watcher before its next tick, when a job needs it sooner (short leases).
        self._wake = anyio.Event()
        self._due = math.inf

    def watch(self, job: Job) -> None:
        """Add ``job`` (to :attr:`jobs`), its first beats a third of the lease and a second
        from now; it stays watched until it leaves :attr:`jobs`."""
        start = anyio.current_time()
        job.next_extension = start + self.lease / 3
        job.next_check = start + WATCH_INTERVAL
        self.jobs.add(job)
        if min(job.next_extension, job.next_check) < self._due:
            self._wake.set()

    async def run(self) -> None:
        """One task for every job in flight (not one per request): extend each job's lease
        every third of it, and while its container call runs, read its record every second
        to notice a cancellation. The beats of one tick run concurrently."""
        clock = anyio.current_time
        while True:
            now = clock()
            due = now + WATCH_INTERVAL
            extend: list[Job] = []
            check: list[Job] = []
            for job in self.jobs:
                if now >= job.next_extension:
                    job.next_extension = now + self.lease / 3
                    extend.append(job)
                if job.call_scope is None:
                    job.next_check = max(job.next_check, now + WATCH_INTERVAL)
                elif now >= job.next_check:
                    job.next_check = now + WATCH_INTERVAL
                    check.append(job)
                due = min(due, job.next_extension, job.next_check)
            if extend or check:
                async with anyio.create_task_group() as tg:
                    for job in extend:
                        tg.start_soon(self._extend, job)
                    for job in check:
                        tg.start_soon(self._check_call, job)
                continue  # the beats took time: look again before sleeping
            self._wake = anyio.Event()
            self._due = due
            with anyio.move_on_after(max(0.0, due - clock())):
                await self._wake.wait()
            self._due = -math.inf  # awake: no job needs to wake it

    async def _check_call(self, job: Job) -> None:
        call = job.call_scope
        if call is not None:
            await self._check_cancelled(job, call)

    async def _extend(self, job: Job) -> bool:
        """Extend the lease; False once it is lost (the job is then cancelled)."""
        try:
            await self.queue.extend(job.delivery, self.lease)
        except LeaseLost as exc:
            if job not in self.jobs:
                return False  # it settled meanwhile (the ack ends the lease)
            job.next_extension = math.inf
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
        if job.call_scope is not call:
            return  # the call ended meanwhile: what it answered stands
        job.cancelled = True
        job.log.info(
            "request %s while the container worked; call abandoned",
            "cancelled" if record is not None else "deleted",
        )
        call.cancel()
