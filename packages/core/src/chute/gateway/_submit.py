"""``POST <endpoint>``: the submit. Headers checked, the body streamed into the store and the
id queued (or both in one step through the store's joint); a repeated ``Idempotency-Key``
answered with the first id; an unknown outcome settled before (or after) answering. See
docs/gateway.md."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import anyio
import anyio.abc

from chute._webhook_targets import TargetRefused, check_request_url
from chute.backends.base import Store
from chute.errors import BackendUnavailable, Conflict, PayloadTooLarge
from chute.gateway import _coalesce as coalesce
from chute.gateway._body import (
    EXTRA_BODY_SHA256,
    Scope,
    _Body,
    _Disconnected,
    _header_size,
    _Receive,
)
from chute.gateway._controls import (
    IDEMPOTENCY_HEADER,
    ControlError,
    Controls,
    idempotent_id,
    is_control,
    parse_controls,
)
from chute.gateway._outcome import UNCONFIRMED_ERROR, Settled, is_refused, settle
from chute.gateway._responses import Response, encoder, error
from chute.gateway._routing import Route
from chute.gateway._state import HEALTH_TIMEOUT, GatewayState
from chute.protocol import (
    EXTRA_WEBHOOK_URL,
    HOP_BY_HOP_HEADERS,
    WEBHOOK_HEADER,
    RequestRecord,
    Status,
    SubmitResponse,
    new_request_id,
    now,
)

#: Seconds an enqueue may take before the submit gives up (and settles the stored record).
ENQUEUE_TIMEOUT = 30.0
#: Seconds a submit whose create or enqueue had an unknown outcome keeps asking the store
#: what happened before it answers (see ``chute.gateway._outcome`` and docs/gateway.md).
SETTLE_TIMEOUT = 10.0
#: Seconds a submit cancelled mid-create (the server stops) may take to settle its record.
CANCELLED_SETTLE_TIMEOUT = 5.0
#: ``RequestRecord.extra`` keys of an idempotent submit: its key (its body's SHA-256 is
#: ``EXTRA_BODY_SHA256``).
EXTRA_IDEMPOTENCY_KEY = "idempotency_key"
#: Set on an idempotent request's record once its message is queued: a repeat of the key is
#: answered with the id only then, never for a request whose enqueue may still fail.
EXTRA_ENQUEUED = "enqueued"

# RFC 9110 media type: token "/" token, then optional parameters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}\s*(;.*)?$")

logger = logging.getLogger("chute.gateway")


class SubmitRoutes(GatewayState):
    """``POST <endpoint>`` and what it needs: probing, settling and idempotent replays."""

    async def _submit(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        assert route.api is not None
        api = route.api.name
        arrived = time.monotonic()
        header_size = _header_size(scope["headers"])
        if header_size > self.max_header_size:
            # Kept, they would reach the container's server, which would refuse them after
            # the client was handed an id.
            raise error(
                431,
                f"the request's headers take {header_size} bytes, above the limit of "
                f"{self.max_header_size} bytes",
            )
        # The key was consumed by the gateway when the API has keys: it is not the container's.
        strip_authorization = bool(self._keys[api])
        content_type: str | None = None
        content_length: bytes | None = None
        headers: list[tuple[str, str]] = []
        controls: list[tuple[str, str]] = []
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name == "content-type":
                if content_type is not None:
                    raise error(400, "more than one Content-Type header")
                content_type = raw_value.decode("latin-1")
                if not _MEDIA_TYPE.match(content_type):
                    raise error(415, f"Content-Type {content_type!r} is not a valid media type")
            elif name == "content-length":
                content_length = raw_value
            elif is_control(name):
                controls.append((name, raw_value.decode("latin-1")))
            elif name == "authorization" and strip_authorization:
                continue
            elif name not in HOP_BY_HOP_HEADERS:
                headers.append((name, raw_value.decode("latin-1")))
        try:
            control = parse_controls(controls)
        except ControlError as exc:
            raise error(400, str(exc)) from None

        store = await self._store()
        if self._suspect:
            await self._probe(store)
        limit = self.max_body_size
        if store.max_payload_size is not None:
            limit = min(limit, store.max_payload_size)
        if content_length is not None:
            if not content_length.strip(b" \t").isdigit():
                raise error(400, f"invalid Content-Length {content_length!r}")
            declared = int(content_length)
            if declared > limit:  # answered before reading a byte of the body
                raise error(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")

        created = now()
        queue_timeout = control.queue_timeout or self._queue_deadlines[api]
        extra: dict[str, Any] = {}
        if control.webhook_url is not None:
            hook = route.api.webhook
            try:
                check_request_url(
                    control.webhook_url,
                    hook.request_urls if hook is not None else (),
                    private_targets=hook is not None and hook.private_targets,
                )
            except TargetRefused as exc:
                raise error(400, f"{WEBHOOK_HEADER}: {exc}") from None
            extra[EXTRA_WEBHOOK_URL] = control.webhook_url
        key = control.idempotency_key
        # Queue and store in one place: created and queued in one atomic step.
        joint = await self._joint_path(store)
        if key is not None:
            extra[EXTRA_IDEMPOTENCY_KEY] = key
            if joint is not None:
                extra[EXTRA_ENQUEUED] = True  # created and queued as one step
        record = RequestRecord(
            id=new_request_id() if key is None else idempotent_id(api, key),
            api=api,
            status=Status.IN_QUEUE,
            created_at=created,
            expires_at=created + self.retention,
            content_type=content_type,
            headers=headers,
            queue_deadline=None if queue_timeout is None else created + queue_timeout,
            timeout=control.execution_timeout,
            extra=extra,
        )
        body = _Body(
            receive,
            limit,
            digest_into=extra if key is not None else None,
            idle=self.body_idle_timeout,
            deadline=arrived + self.body_timeout,
        )
        if key is not None:
            replayed = await self._replay(store, record, control, body, before_create=True)
            if replayed is not None:
                return replayed
        try:
            if joint is not None:
                stored = await coalesce.submit(joint, record, body.chunks())
            else:
                stored = await store.create(record, body.chunks())
        except PayloadTooLarge as exc:
            raise error(413, f"body exceeds the limit of {exc.limit} bytes") from None
        except Conflict:
            if key is None:
                raise
            # Another submit with the same key created it first: this one is its repeat.
            replayed = await self._replay(store, record, control, body, before_create=False)
            if replayed is None:
                raise BackendUnavailable(
                    f"a request with this {IDEMPOTENCY_HEADER} was being submitted and was "
                    "not queued; retry"
                ) from None
            return replayed
        except Exception:
            # The store may wrap what our body iterator raised; the flags say what happened.
            if body.disconnected:
                raise _Disconnected from None
            if body.too_large:
                raise error(413, f"body exceeds the limit of {limit} bytes") from None
            if body.timed_out:
                raise error(
                    408, "the request body did not arrive in time; nothing was queued"
                ) from None
            # Anything else: the record may have been stored (and queued) all the same.
            answer = await self._settle(store, record, control, body)
            if answer is None:
                raise  # definite: it will not run
            return answer
        except BaseException:  # cancelled (the server stops): leave nothing half-submitted
            with anyio.CancelScope(shield=True):
                await self._settle(
                    store, record, control, body, within=CANCELLED_SETTLE_TIMEOUT, answer=False
                )
            raise
        if key is not None and stored.extra.get(EXTRA_BODY_SHA256) != body.sha256:
            # A store that copied the record before the body ended: record the hash now.
            await store.annotate(api, record.id, **{EXTRA_BODY_SHA256: body.sha256})

        if joint is not None:
            return Response(200, encoder.encode(SubmitResponse(record.id)))
        # Shielded: once stored, the record must be either queued or refused, even if the
        # server cancels this task (shutdown), or it would stay in_queue forever.
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(ENQUEUE_TIMEOUT):
                    queue = await self._queue()
                    await queue.send(api, record.id)
            except Exception as exc:
                # Sent or not, the record says: refused unless a dequeuer already took it.
                answer = await self._settle(store, record, control, body)
                if answer is not None:
                    return answer
                if isinstance(exc, TimeoutError):
                    raise BackendUnavailable(
                        f"the queue did not answer within {ENQUEUE_TIMEOUT} s"
                    ) from None
                raise
            if key is not None:
                await self._mark_enqueued(store, api, record.id)
        return Response(200, encoder.encode(SubmitResponse(record.id)))

    async def _probe(self, store: Store) -> None:
        """While the store is suspect, ping the backends before writing anything: an error
        now is a definite 503 (nothing was written), not an unknown outcome to settle."""
        try:
            with anyio.fail_after(HEALTH_TIMEOUT):
                await store.ping()
                if await self._joint_path(store) is None:
                    await (await self._queue()).ping()
        except TimeoutError:
            raise BackendUnavailable(
                f"the backends did not answer within {HEALTH_TIMEOUT} s"
            ) from None
        self._suspect = False

    async def _settle(
        self,
        store: Store,
        record: RequestRecord,
        control: Controls,
        body: _Body,
        *,
        within: float | None = None,
        answer: bool = True,
    ) -> Response | None:
        """Settle a submit whose create or enqueue had an unknown outcome (see
        ``chute.gateway._outcome``): the answer when it runs (its id), None when it will not
        (the caller raises its error)."""
        api = record.api
        self._suspect = True
        deadline = time.monotonic() + (self.settle_timeout if within is None else within)
        settlement = await settle(store, record, deadline=deadline)
        self.metrics.submits_settled.labels(api, settlement.settled.value).inc()
        if settlement.settled is not Settled.UNKNOWN:
            self._suspect = False
        if settlement.settled is Settled.REFUSED:
            return None
        if settlement.settled is Settled.OTHERS:
            if not answer:
                return None
            # An Idempotency-Key repeat stored the id first: answer as its repeat.
            replayed = await self._replay(store, record, control, body, before_create=False)
            if replayed is None:
                raise BackendUnavailable(
                    f"a request with this {IDEMPOTENCY_HEADER} was being submitted and was "
                    "not queued; retry"
                )
            return replayed
        if settlement.settled is Settled.UNKNOWN:
            # The store stays silent: the request may run. Its id is the only true answer;
            # once the store answers, a request that did not start is refused and its
            # record says so (GET: cancelled, error submit_unconfirmed), never a 404.
            logger.error(
                "submit outcome unknown: the store did not answer; answering the id and "
                "settling in the background",
                extra={"api": api, "request_id": record.id},
            )
            self._settle_later(store, record)
        elif control.idempotency_key is not None:
            await self._mark_enqueued(store, api, record.id)
        return Response(200, encoder.encode(SubmitResponse(record.id)))

    def _settle_later(self, store: Store, record: RequestRecord) -> None:
        if self._background is None:
            logger.error(
                "cannot settle in the background: the gateway's lifespan is not running",
                extra={"api": record.api, "request_id": record.id},
            )
            return
        self._unsettled[record.api, record.id] = record
        self._background.start_soon(self._settle_in_background, store, record)

    async def _settle_in_background(self, store: Store, record: RequestRecord) -> None:
        try:
            await self._settle_unsettled(store, record)
        finally:
            self._unsettled.pop((record.api, record.id), None)

    async def _settle_unsettled(self, store: Store, record: RequestRecord) -> None:
        settlement = await settle(
            store,
            record,
            deadline=time.monotonic() + max(0.0, record.expires_at - now()),
            error_type=UNCONFIRMED_ERROR,
            message=(
                "the gateway answered with this id while the store was unreachable; once it "
                "answered, the request had not started, so it was cancelled and never ran"
            ),
            remove=False,
        )
        logger.warning(
            "submit settled in the background",
            extra={
                "api": record.api,
                "request_id": record.id,
                "outcome": settlement.settled.value,
            },
        )

    async def _mark_enqueued(self, store: Store, api: str, request_id: str) -> None:
        """Let repeats of this Idempotency-Key answer with the id (see ``_replay``)."""
        try:
            with anyio.fail_after(ENQUEUE_TIMEOUT):
                await store.annotate(api, request_id, **{EXTRA_ENQUEUED: True})
        except Exception:
            # The request is queued; only its repeats answer 503 until it starts.
            logger.warning(
                "could not mark an idempotent request as queued",
                exc_info=True,
                extra={"api": api, "request_id": request_id},
            )

    async def _replay(
        self,
        store: Store,
        record: RequestRecord,
        control: Controls,
        body: _Body,
        *,
        before_create: bool,
    ) -> Response | None:
        """Answer a repeated Idempotency-Key: the first request's id if the body is the same
        (nothing is queued again), 409 if not. None when there is no live first request.

        ``before_create``: look before creating; a first request past its retention that the
        store still holds is removed, so the key starts a new request.
        """
        api, key = record.api, control.idempotency_key
        found = await store.read(api, record.id)
        if found is None:
            return None
        existing = found[0]
        if existing.expires_at <= now() or (
            is_refused(existing)
            and existing.error is not None
            and existing.error.type != UNCONFIRMED_ERROR
        ):
            # Past its retention, or refused with an error answer: the key starts anew.
            if before_create:
                await store.delete(api, record.id)
            return None
        try:
            await body.drain()
        except PayloadTooLarge:
            raise error(413, f"body exceeds the limit of {body.limit} bytes") from None
        if (
            existing.extra.get(EXTRA_IDEMPOTENCY_KEY) != key
            or existing.extra.get(EXTRA_BODY_SHA256) != body.sha256
        ):
            raise error(
                409,
                f"{IDEMPOTENCY_HEADER} was already used for request {record.id} with a "
                "different body",
            )
        if existing.status is Status.IN_QUEUE and not existing.extra.get(EXTRA_ENQUEUED):
            # The first submit has stored its record but not yet queued it, and its enqueue
            # may still fail (and remove the record): an id now could later answer 404.
            raise BackendUnavailable(
                f"a request with this {IDEMPOTENCY_HEADER} is still being submitted; retry"
            )
        self.metrics.idempotent_replays.labels(api).inc()
        return Response(200, encoder.encode(SubmitResponse(existing.id)))
