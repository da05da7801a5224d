"""The two seams every backend implements: a :class:`Queue` of request ids and a :class:`Store`
of request records, payloads and results.

A backend is named by URL (``sqlite:///…``, ``redis://…``); a plugin registers factories for
its schemes through the ``chute_register_backends`` hook (see ``chute.hookspecs``). Behaviour
is pinned down by the contract suite in ``chute.testing``, which every backend's tests subclass.

Queue objects serve every API: each method names the API, and the backend keeps one queue per
API (its own keys, table rows or SQS queue). All methods may raise
:class:`~chute.errors.BackendUnavailable`; none lets an SDK exception escape.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from chute.closing import AsyncClosing
from chute.errors import (
    ChuteError,
    Conflict,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    TransitionRejected,
    Unsupported,
)
from chute.lifecycle import apply_requeue, apply_transition
from chute.protocol import ErrorInfo, RequestRecord, Status, now, validate_request_id


#: The version of a record that was written but whose new version the backend did not tell
#: (see :meth:`Store.write_next`): a transition from it reads the record first.
class _UnknownVersion:
    def __repr__(self) -> str:
        return "UNKNOWN_VERSION"


UNKNOWN_VERSION: object = _UnknownVersion()

#: A record and the opaque version it was read (or written) at, as :meth:`Store.read` returns.
Versioned = tuple[RequestRecord, object]

#: How long results are kept unless an API says otherwise (Cortex's 7 days).
DEFAULT_RETENTION = 7 * 24 * 3600.0


class Delivery(msgspec.Struct, frozen=True):
    """One received message: a request id leased to one consumer.

    ``attempt`` counts deliveries of this message, from 1; it is the fencing token the store
    checks. ``receipt`` is the backend's opaque handle for extend/ack/release.
    """

    api: str
    request_id: str
    attempt: int
    receipt: str


class QueueDepth(msgspec.Struct, frozen=True):
    """Messages waiting (``queued``, including delayed ones), leased to a consumer
    (``in_flight``) and parked in the dead letter (``dead``). ``delayed`` is the part of
    ``queued`` not visible yet (a retry's backoff, a ``delay=`` send): ``queued - delayed``
    could be received now. A backend that cannot tell leaves it 0."""

    queued: int
    in_flight: int
    dead: int = 0
    delayed: int = 0


class DeadLetter(msgspec.Struct, frozen=True):
    """A message that was given up on, with why and after how many attempts."""

    api: str
    request_id: str
    reason: str
    attempts: int
    dead_at: float


#: A conditional write that tells the new version (see :meth:`Store.write_next`).
WriteNext = Callable[[RequestRecord, object, bytes | None], Awaitable[object | None]]


class RequestPage(msgspec.Struct, frozen=True):
    """One page of :meth:`Store.list_requests`: records newest first, and the cursor that asks
    for the next (older) page, or None after the last one."""

    records: list[RequestRecord]
    cursor: str | None = None


class Received(NamedTuple):
    """A delivery as :meth:`Joint.receive` hands it out, with what was read along with it."""

    delivery: Delivery
    #: The live record and its version, as read in the same step; None if there is none (or
    #: it expired).
    found: Versioned | None
    #: The whole payload when it is small enough to come along; None means: stream it with
    #: :meth:`Store.payload`.
    payload: bytes | None
    #: The receive also started the request (``receive(start=True)`` on a joint that
    #: :attr:`~Joint.starts_on_receive`): ``found`` is the record moved to ``in_progress`` for
    #: this delivery's attempt, with its new version. False: the caller starts it (or drops,
    #: expires it) as on the generic path.
    started: bool = False


class Write(NamedTuple):
    """One conditional write of a batch (:meth:`Store.write_many`): what
    :meth:`Store.write_next` takes."""

    record: RequestRecord
    version: object
    result: bytes | None = None


class Settle(NamedTuple):
    """One delivery's outcome for :meth:`Joint.settle_many`: the new record, written on
    condition of ``version``, with ``result``; the delivery is acked in the same step."""

    delivery: Delivery
    record: RequestRecord
    version: object
    result: bytes | None = None


class Submit(NamedTuple):
    """One request of :meth:`Joint.submit_many`: its record and its whole payload."""

    record: RequestRecord
    payload: bytes


class Settled(NamedTuple):
    """What :meth:`Joint.settle_many` did with one :class:`Settle`: ``version`` as
    :meth:`Store.write_next` tells it (None: the record moved, nothing written and nothing
    acked), ``acked`` as :attr:`AckingWrite.acked` tells it."""

    version: object | None
    acked: bool


class AckingWrite(abc.ABC):
    """A conditional write of a delivery's outcome that also acks the delivery in the same
    atomic step; pass it as ``write`` to :meth:`Store.transition_versioned`.

    When the record moved, nothing is written and nothing is acked (the store then decides
    again on the stored record, and writes with this again). After a write, :attr:`acked`
    says whether the ack happened: False when the lease was no longer the caller's (the
    outcome is stored all the same, as an ack raising LeaseLost would leave it).
    """

    acked: bool = False

    @abc.abstractmethod
    async def __call__(
        self, record: RequestRecord, version: object, result: bytes | None
    ) -> object | None:
        """:meth:`Store.write_next`, and the ack."""


class Joint(abc.ABC):
    """Optional capability of a queue and a store kept in one place (the same Redis server
    and database): steps that are separate calls on the generic path are one atomic round
    trip. :meth:`Store.joint` offers it; where it returns None, callers take the generic
    path (``Queue.receive`` + ``Store.read_live`` + ``Store.payload``; ``Store.transition`` +
    ``Queue.ack``), which stays the reference behaviour. The contract suite's
    ``JointContract`` checks that both paths agree.
    """

    @abc.abstractmethod
    async def submit(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        """:meth:`Store.create` and, in the same atomic step, :meth:`Queue.send` of its id:
        raises as ``create`` does, and then nothing is queued."""

    @abc.abstractmethod
    async def receive(
        self,
        api: str,
        *,
        max_messages: int = 1,
        wait: float = 20.0,
        lease: float = 30.0,
        start: bool = False,
        queue_limit: float | None = None,
    ) -> list[Received]:
        """:meth:`Queue.receive`, with each delivery's live record (and small payload).

        ``start``: where the joint :attr:`starts_on_receive`, also move each record that
        :func:`chute.lifecycle.start_on_receive` would start (``queue_limit``: the API's
        ``deadlines.queue``) to ``in_progress`` in the same atomic step, exactly as
        :meth:`Store.transition` would (the same record, a conditional write: a concurrent
        move of the record either comes before and is seen, or after and finds the new
        version), and say so in :attr:`Received.started`. Every other delivery comes back
        unstarted, for the caller to handle as on the generic path. A joint that does not
        start on receive ignores ``start``."""

    #: Capability: :meth:`receive` honours ``start`` (starts records in the same step).
    starts_on_receive: bool = False

    @abc.abstractmethod
    def acking(self, delivery: Delivery) -> AckingWrite:
        """A write for :meth:`Store.transition_versioned` that acks ``delivery`` with it."""

    #: Capability: how many settles :meth:`settle_many` (or submits :meth:`submit_many`)
    #: makes in one call (one round trip); 1, the default, means one after another.
    max_batch: int = 1

    async def submit_many(self, submits: Sequence[Submit]) -> list[RequestRecord | ChuteError]:
        """Several :meth:`submit` calls of payloads already in memory, in as few calls as the
        backend can, each with its own answer: the record as stored, or the error
        :meth:`submit` would raise for that request alone (Conflict, PayloadTooLarge), in
        which case nothing of it is stored or queued. An outage raises for the whole batch,
        as it would for each submit. The default submits one at a time; that is the
        reference (``JointContract``)."""
        answers: list[RequestRecord | ChuteError] = []
        for item in submits:
            try:
                answers.append(await self.submit(item.record, _pieces(item.payload)))
            except (Conflict, PayloadTooLarge) as exc:
                answers.append(exc)
        return answers

    async def settle_many(self, settles: Sequence[Settle]) -> list[Settled]:
        """Several :meth:`acking` writes, each with its own outcome, in as few calls as the
        backend can: one item whose record moved (or whose lease is gone) changes nothing
        for the others. The default makes them one at a time; that is the reference a
        backend declaring :attr:`max_batch` above 1 must agree with (``JointContract``)."""
        settled = []
        for item in settles:
            write = self.acking(item.delivery)
            version = await write(item.record, item.version, item.result)
            settled.append(Settled(version, write.acked))
        return settled


class Queue(AsyncClosing, abc.ABC):
    """A reliable queue of request ids with leases (at-least-once delivery).

    What a backend can do is declared on its class, never in a test: the *capabilities*
    below (``supports_*``, ``max_batch``, ``min_lease``, ...). Callers read them to choose
    their path, and the contract suite (``chute.testing.QueueContract``) runs the cases of
    each capability a backend declares and, for one it declares absent, checks that the
    methods raise :class:`~chute.errors.Unsupported`. Settings the user chooses (URL options)
    are not capabilities.
    """

    # -- capabilities (what the backend can do; fixed by its class) ------------------------

    #: The shortest lease (seconds) the backend can honour; the contract suite uses it.
    min_lease: float = 0.2
    #: Capability: the most messages :meth:`receive` takes in one call (one round trip or
    #: transaction); callers ask for no more at once. 1, the default: one per call.
    max_batch: int = 1
    #: Capability: the queue keeps the messages it gave up on (:meth:`dead_letter`,
    #: :meth:`list_dead`, :meth:`requeue_dead`, :meth:`purge_dead`). Where False, those raise
    #: :class:`~chute.errors.Unsupported` (the defaults here do), the dequeuer fails a request
    #: that runs out of attempts and acks its message, and ``chute dead-letter`` says so.
    supports_dead_letter: bool = True
    #: Capability: :meth:`depth` counts the queue's messages. Where False (Pub/Sub), it raises
    #: :class:`~chute.errors.Unsupported`, never answering wrong figures; the gateway's queue
    #: route answers 501 and its metrics leave the depth out.
    supports_depth: bool = True
    #: How :meth:`depth` counts a message released with a delay while it is hidden: as
    #: ``queued`` (True) or as ``in_flight`` (False: SQS, whose ``ChangeMessageVisibility``
    #: keeps it "not visible").
    depth_counts_delayed_as_queued: bool = True

    @abc.abstractmethod
    async def send(self, api: str, request_id: str, *, delay: float = 0.0) -> None:
        """Enqueue ``request_id`` for ``api``, visible after ``delay`` seconds."""

    @abc.abstractmethod
    async def receive(
        self, api: str, *, max_messages: int = 1, wait: float = 20.0, lease: float = 30.0
    ) -> list[Delivery]:
        """Take up to ``max_messages`` visible messages, each leased for ``lease`` seconds.

        Blocks up to ``wait`` seconds on the backend's own wake-up when nothing is visible and
        returns ``[]`` if nothing came. A message whose lease lapses becomes visible again and
        its next delivery has ``attempt`` one higher.
        """

    @abc.abstractmethod
    async def extend(self, delivery: Delivery, lease: float) -> None:
        """Push the lease's end to ``lease`` seconds from now. Raises LeaseLost if the lease
        lapsed and the message was delivered again, or was acked."""

    @abc.abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """Remove the message for good. Raises LeaseLost if another consumer holds it now."""

    async def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Several :meth:`ack` calls in as few calls as the backend can (up to
        :attr:`max_batch` each), each with its own outcome: True when acked, False where
        :meth:`ack` would raise LeaseLost (the others are acked all the same). The default acks
        one at a time; that is the reference a backend declaring :attr:`max_batch` above 1
        must agree with (``QueueContract``)."""
        acked = []
        for delivery in deliveries:
            try:
                await self.ack(delivery)
            except LeaseLost:
                acked.append(False)
            else:
                acked.append(True)
        return acked

    @abc.abstractmethod
    async def release(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        """Give the message back, visible again after ``delay`` seconds (retry, shutdown).
        Raises LeaseLost if another consumer holds it now, or it was settled."""

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to the API's dead letter, with the reason it was given up and its
        attempts. Raises LeaseLost if another consumer holds it now, or it was settled. A
        requeued dead letter keeps its attempt count (attempts are fencing tokens).
        Raises Unsupported where :attr:`supports_dead_letter` is False."""
        raise self._unsupported("dead_letter")

    async def list_dead(self, api: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``api`` (Unsupported without a dead letter)."""
        raise self._unsupported("dead_letter")

    async def requeue_dead(self, api: str, request_ids: Sequence[str] | None = None) -> int:
        """Send dead letters back to the queue (all, or those named); return how many
        (Unsupported without a dead letter)."""
        raise self._unsupported("dead_letter")

    async def purge_dead(self, api: str) -> int:
        """Delete every dead letter of ``api``; return how many (Unsupported without a dead
        letter)."""
        raise self._unsupported("dead_letter")

    async def depth(self, api: str) -> QueueDepth:
        """How many messages wait, are leased and are dead, without scanning them all
        (Unsupported where :attr:`supports_depth` is False)."""
        raise self._unsupported("depth")

    def _unsupported(self, capability: str) -> Unsupported:
        """The error for a capability this queue declares absent; a queue that declares it
        and still lands here lacks the override (the contract suite catches it)."""
        name = type(self).__name__
        if getattr(self, f"supports_{capability}", False):
            return Unsupported(f"{name} declares supports_{capability} but does not implement it")
        what = {"dead_letter": "has no dead letter", "depth": "cannot count its messages"}
        return Unsupported(f"{name} {what[capability]} (supports_{capability} = False)")

    async def ping(self) -> None:
        """Raise BackendUnavailable if the backend cannot be reached."""


class Store(AsyncClosing, abc.ABC):
    """Request records, payloads and results, with conditional writes.

    Backends implement the storage primitives (``create``, ``read``, ``write_if``, …); the
    state machine (:meth:`transition`) and the expiry check (:meth:`get`) are shared here so
    that every backend obeys the same rules. Capabilities are declared on the class, as for
    :class:`Queue` (``supports_listing``, ``max_batch``, ``purge_removes_expired``).
    """

    #: Knob (the user's, through the URL option ``max_payload_size``, not a capability): the
    #: largest payload the store accepts, in bytes; ``None`` means no limit of its own.
    max_payload_size: int | None = None
    #: Capability: once a record is past its ``expires_at``, :meth:`purge_expired` (or the
    #: storage by itself: Redis TTLs) removes it at once. False where the storage deletes on
    #: its own schedule (bucket lifecycle rules, about daily: S3, GCS); :meth:`get` hides an
    #: expired record either way.
    purge_removes_expired: bool = True

    # -- primitives ------------------------------------------------------------------------

    @abc.abstractmethod
    async def create(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        """Store a new record and stream its payload from ``body``.

        Returns the record as stored (with ``payload_size`` filled in). Raises Conflict if the
        id exists, PayloadTooLarge above ``max_payload_size``; on any error nothing is left
        behind that a reader could see.
        """

    @abc.abstractmethod
    async def read(self, api: str, request_id: str) -> tuple[RequestRecord, object] | None:
        """The record and an opaque version for :meth:`write_if`, or None. No expiry check."""

    @abc.abstractmethod
    async def write_if(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> bool:
        """Replace the record if its version is still ``version``; store ``result`` with it
        atomically (results are written only with ``completed``). False if the record moved."""

    @abc.abstractmethod
    def payload(self, api: str, request_id: str) -> AsyncIterator[bytes]:
        """Stream the payload back in chunks. Raises NotFound if there is none."""

    @abc.abstractmethod
    async def result(self, api: str, request_id: str) -> bytes | None:
        """The stored result bytes (JSON), or None."""

    @abc.abstractmethod
    async def delete(self, api: str, request_id: str) -> bool:
        """Remove the record, payload and result; False if there was nothing."""

    async def write_next(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> object | None:
        """:meth:`write_if` that also tells the record's new version: ``None`` when the record
        moved (nothing written), else the version a following write may name, or
        :data:`UNKNOWN_VERSION` when the backend cannot tell it without a read (the default:
        the next :meth:`transition` from it then reads the record first). Backends whose
        conditional write knows the new version override this; it saves a read per move."""
        if await self.write_if(record, version, result=result):
            return UNKNOWN_VERSION
        return None

    #: Capability: how many writes :meth:`write_many` makes in one call (one round trip or
    #: transaction); 1, the default, means it makes them one after another.
    max_batch: int = 1

    async def write_many(self, writes: Sequence[Write]) -> list[object | None]:
        """Several :meth:`write_next` calls in as few calls as the backend can, each with its
        own outcome (the new version, or None when that record moved): one failed condition
        changes nothing for the others. The default writes them one at a time; that is the
        reference a backend declaring :attr:`max_batch` above 1 must agree with (the
        ``StoreContract``'s batch tests)."""
        return [await self.write_next(w.record, w.version, result=w.result) for w in writes]

    #: Capability: the store can list an API's recent requests (:meth:`list_requests`).
    supports_listing: bool = False

    async def list_requests(
        self,
        api: str,
        *,
        status: Status | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RequestPage:
        """The requests of ``api`` within their retention, newest first (by ``created_at``,
        then id), only those now in ``status`` if given; at most ``limit`` (1 to
        :data:`~chute.backends.listing.MAX_PAGE`) per page, continuing after ``cursor`` (from
        the previous page). Paging neither repeats nor skips a record that kept its status.
        A backend that declares :attr:`supports_listing` implements this (the helpers in
        :mod:`chute.backends.listing` order, filter and page); the default raises
        :class:`~chute.errors.Unsupported`."""
        raise Unsupported(f"{type(self).__name__} cannot list requests")

    def joint(self, queue: Queue) -> Joint | None:
        """The :class:`Joint` fast path of this store with ``queue``, when both live in one
        place; None (the default) when they do not or the backend has none."""
        return None

    async def initialize(self, *, retention: float = DEFAULT_RETENTION) -> list[str]:
        """Prepare the storage for chute (``chute storage init``): for example install a bucket
        lifecycle rule that deletes objects ``retention`` seconds after they were written.
        Idempotent. Returns one human-readable line per thing done or already in place.
        Backends that need nothing keep this default."""
        return []

    async def purge_expired(self) -> int:
        """Delete records past their ``expires_at``; return how many. Backends whose storage
        expires by itself (Redis TTLs, bucket lifecycle rules) keep this default."""
        return 0

    async def ping(self) -> None:
        """Raise BackendUnavailable if the backend cannot be reached."""

    # -- shared behaviour ------------------------------------------------------------------

    async def get(self, api: str, request_id: str) -> RequestRecord | None:
        """The live record, or None if unknown or past its retention."""
        found = await self.read_live(api, request_id)
        return None if found is None else found[0]

    async def read_live(self, api: str, request_id: str) -> Versioned | None:
        """:meth:`get` with the record's version: a caller that moves the request next passes
        it to :meth:`transition` as ``current`` and saves the store a read."""
        found = await self.read(api, validate_request_id(request_id))
        if found is None or found[0].expires_at <= now():
            return None
        return found

    async def transition(
        self,
        api: str,
        request_id: str,
        to: Status,
        *,
        attempt: int | None = None,
        error: ErrorInfo | None = None,
        result: bytes | None = None,
        extra: Mapping[str, Any] | None = None,
        current: Versioned | None = None,
    ) -> RequestRecord:
        """Move a request to ``to`` under the rules of ``chute.lifecycle``, atomically, merging
        ``extra`` into the record's ``extra`` with the move.

        ``current`` is the record and version the caller already holds (from
        :meth:`read_live` or :meth:`transition_versioned`): the move is computed from it and
        written conditionally on its version, without a read; if the record moved meanwhile,
        the store reads it and decides again, exactly as without ``current``.

        Raises NotFound for an unknown or expired id and TransitionRejected when the move is
        not allowed from the state the store holds (for example a late duplicate delivery
        trying to overwrite a terminal record).
        """
        moved = await self.transition_versioned(
            api,
            request_id,
            to,
            attempt=attempt,
            error=error,
            result=result,
            extra=extra,
            current=current,
        )
        return moved[0]

    async def transition_versioned(
        self,
        api: str,
        request_id: str,
        to: Status,
        *,
        attempt: int | None = None,
        error: ErrorInfo | None = None,
        result: bytes | None = None,
        extra: Mapping[str, Any] | None = None,
        current: Versioned | None = None,
        write: WriteNext | None = None,
    ) -> Versioned:
        """:meth:`transition`, returning the new record with its new version (possibly
        :data:`UNKNOWN_VERSION`), for the caller's next move. ``write`` replaces
        :meth:`write_next` as the conditional write (a :class:`Joint`'s acking write)."""
        if result is not None and to is not Status.COMPLETED:
            raise ValueError("a result is stored only with the completed status")
        return await self._update(
            api,
            request_id,
            lambda record: apply_transition(
                record, to, attempt=attempt, at=now(), error=error, extra=extra
            ),
            result=result,
            current=current,
            write=write,
        )

    async def annotate(self, api: str, request_id: str, **extra: Any) -> RequestRecord:
        """Merge ``extra`` into the record's ``extra`` and nothing else (the status, attempt
        and result never change), on any record, terminal ones included: for example the
        outcome of a webhook delivery. Concurrent annotations and transitions are not lost:
        each is a conditional write, retried on a conflict. Raises NotFound."""
        updated = await self._update(
            api,
            request_id,
            lambda record: msgspec.structs.replace(record, extra={**record.extra, **extra}),
        )
        return updated[0]

    async def requeue(self, api: str, request_id: str) -> RequestRecord:
        """Bring a dead-lettered ``failed`` record back to ``in_queue`` (the operator's
        ``chute dead-letter requeue``; see ``chute.lifecycle.apply_requeue``). The caller then
        requeues the message. Raises NotFound, or TransitionRejected for any other record."""
        updated = await self._update(
            api, request_id, lambda record: apply_requeue(record, at=now())
        )
        return updated[0]

    async def _update(
        self,
        api: str,
        request_id: str,
        change: Callable[[RequestRecord], RequestRecord],
        *,
        result: bytes | None = None,
        current: Versioned | None = None,
        write: WriteNext | None = None,
    ) -> Versioned:
        """Read, change, write back if nobody wrote meanwhile; retry on a conflict. A
        ``current`` the caller holds stands in for the first read."""
        validate_request_id(request_id)
        found = current if current is not None and current[1] is not UNKNOWN_VERSION else None
        if found is not None and (found[0].api != api or found[0].id != request_id):
            raise ValueError(f"current is the record of {found[0].id}, not of {request_id}")
        given = found is not None
        for _ in range(16):
            if found is None:
                found = await self.read(api, request_id)
            if found is None or found[0].expires_at <= now():
                raise NotFound(f"request {request_id} of API {api} not found")
            record, version = found
            try:
                updated = change(record)
            except TransitionRejected:
                if not given:
                    raise
                given, found = False, None  # judged on what the caller held: ask the store
                continue
            given = False
            if write is None:
                written = await self.write_next(updated, version, result=result)
            else:
                written = await write(updated, version, result)
            if written is not None:
                return updated, written
            found = None  # the record moved: read it again and decide again
        raise TransitionRejected(f"request {request_id}: too much contention, gave up")


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    yield data
