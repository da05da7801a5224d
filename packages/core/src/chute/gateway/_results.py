"""One request: ``GET <endpoint>/<id>`` (with ``?wait=`` long-polling through the shared
watch), ``GET <endpoint>/<id>/result`` (the result's bytes) and ``DELETE <endpoint>/<id>``
(cancel); a queue deadline passed is expired lazily here."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import msgspec

from chute.backends.base import Store
from chute.errors import InvalidRequestId, NotFound, TransitionRejected
from chute.gateway._body import Scope, _Disconnected, _Receive
from chute.gateway._numbers import NumberError, parse_seconds
from chute.gateway._responses import JSON, Response, encoder, error
from chute.gateway._routing import Route
from chute.gateway._state import GatewayState
from chute.gateway._watch import MAX_WAIT, Observation
from chute.lifecycle import queue_deadline_passed
from chute.protocol import (
    EXTRA_RESULT_TYPE,
    RequestRecord,
    Status,
    now,
    result_response,
    validate_request_id,
)

logger = logging.getLogger("chute.gateway")


class ResultRoutes(GatewayState):
    """``GET``, ``GET …/result`` and ``DELETE`` of one request, and the observation of it that
    the shared watch and every read use."""

    async def _observe(self, store: Store, api: str, request_id: str) -> Observation:
        """The request now: its live record (expired lazily when its queue deadline passed
        while it was still queued) and, once completed, its result bytes."""
        record = await store.get(api, request_id)
        if record is None:
            # Answered with its id while the store was silent and not settled yet: as submitted.
            record = self._unsettled.get((api, request_id))
            if record is not None:
                return Observation(record)
        if record is not None and self._queue_deadline_passed(record):
            record = await self._end(store, record, Status.EXPIRED)
        result: bytes | None = None
        if (
            record is not None
            and record.status is Status.COMPLETED
            and EXTRA_RESULT_TYPE not in record.extra  # bytes: read at …/result, not here
        ):
            result = await store.result(api, request_id)
            if result is None:
                logger.error(
                    "completed record has no result", extra={"api": api, "request_id": request_id}
                )
        return Observation(record, result)

    def _queue_deadline_passed(self, record: RequestRecord) -> bool:
        limit = self._queue_deadlines.get(record.api)
        return queue_deadline_passed(record, limit, at=now())

    async def _end(self, store: Store, record: RequestRecord, to: Status) -> RequestRecord | None:
        """Move a live request to ``to`` (cancelled, expired) and send its webhook; if it moved
        elsewhere meanwhile, the record as it is now. None if it is gone."""
        api = record.api
        try:
            ended = await store.transition(api, record.id, to)
        except TransitionRejected:
            return await store.get(api, record.id)  # someone else moved it: take theirs
        except NotFound:
            return None
        logger.info(
            f"request {to.value}", extra={"api": api, "request_id": record.id, "by": "gateway"}
        )
        self._notify(store, ended)
        return ended

    def _notify(self, store: Store, record: RequestRecord) -> None:
        """Queue the webhook of a transition the gateway made (cancelled, expired)."""
        if self.webhooks is None:
            logger.warning(
                "webhook not sent: the gateway's lifespan is not running",
                extra={"api": record.api, "request_id": record.id},
            )
            return
        self.webhooks.notify(store, self._by_name[record.api], record)

    def _count_webhook(self, outcome: str) -> None:
        self.metrics.webhooks.labels(outcome).inc()

    async def _watch_observe(self, api: str, request_id: str) -> Observation:
        self.metrics.watch_reads.inc()
        return await self._observe(await self._store(), api, request_id)

    def _request_id(self, route: Route) -> str:
        assert route.api is not None
        try:
            return validate_request_id(route.request_id)
        except InvalidRequestId:
            # Such an id can never have been issued: to the client it is simply not found.
            raise error(
                404, f"request {route.request_id!r} of API {route.api.name} not found"
            ) from None

    async def _result(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        assert route.api is not None
        api = route.api.name
        request_id = self._request_id(route)
        wait = _wait_seconds(scope)
        if wait is None:
            return self._answer(
                api, request_id, await self._observe(await self._store(), api, request_id)
            )
        scope["chute.long_poll"] = True
        await self._store()  # a 503 at once, not after the wait, when the store is down
        seen = await self._long_poll(receive, api, request_id, wait)
        if seen is None:
            raise _Disconnected
        return self._answer(api, request_id, seen)

    async def _long_poll(
        self, receive: _Receive, api: str, request_id: str, wait: float
    ) -> Observation | None:
        """Wait on the shared watch; None if the client went away meanwhile."""
        seen: Observation | None = None
        self.metrics.long_poll_waiters.inc()
        try:
            async with anyio.create_task_group() as tg:

                async def disconnect() -> None:
                    # A GET has no body: the next message after it is the disconnect.
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(disconnect)
                seen = await self.watcher.wait(api, request_id, wait)
                tg.cancel_scope.cancel()
        finally:
            self.metrics.long_poll_waiters.dec()
            self.metrics.watched_requests.set(self.watcher.watched)
        return seen

    def _answer(self, api: str, request_id: str, seen: Observation) -> Response:
        record = seen.record
        if record is None:
            raise error(404, f"request {request_id} of API {api} not found (or expired)")
        result: Any = msgspec.UNSET
        if record.status is Status.COMPLETED:
            # The stored bytes are JSON already: spliced in as they are, never re-encoded.
            result = msgspec.Raw(seen.result if seen.result is not None else b"null")
        endpoint = self._by_name[api].endpoint
        return Response(200, encoder.encode(result_response(record, result, endpoint=endpoint)))

    async def _result_body(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        """``GET <endpoint>/<id>/result``: the result's bytes with their type (JSON results
        too, as ``application/json``)."""
        assert route.api is not None
        api = route.api.name
        request_id = self._request_id(route)
        store = await self._store()
        record = (await self._observe(store, api, request_id)).record
        if record is None:
            raise error(404, f"request {request_id} of API {api} not found (or expired)")
        if record.status is not Status.COMPLETED:
            raise error(
                409,
                f"request {request_id} is {record.status.value}: only a completed request has "
                "a result",
            )
        result = await store.result(api, request_id)
        if result is None:
            raise error(404, f"the result of request {request_id} of API {api} is gone")
        kind = record.extra.get(EXTRA_RESULT_TYPE)
        content_type = kind.encode("latin-1") if isinstance(kind, str) else JSON
        return Response(200, result, content_type)

    async def _cancel(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        assert route.api is not None
        api = route.api.name
        request_id = self._request_id(route)
        store = await self._store()
        record = (await self._observe(store, api, request_id)).record
        if record is not None and not record.status.terminal:
            record = await self._end(store, record, Status.CANCELLED)
        if record is None:
            raise error(404, f"request {request_id} of API {api} not found (or expired)")
        if record.status is not Status.CANCELLED:
            raise error(
                409,
                f"request {request_id} is already {record.status.value}; "
                "only a queued or running request can be cancelled",
            )
        return Response(200, encoder.encode(result_response(record)))


def _wait_seconds(scope: Scope) -> float | None:
    """The ``?wait=SECONDS`` of a GET (None without one); 400 unless 0 < SECONDS <= 60."""
    query: bytes = scope.get("query_string", b"")
    if not query:
        return None
    values = [
        v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if k == "wait"
    ]
    if not values:
        return None
    if len(values) > 1:
        raise error(400, "more than one wait parameter")
    try:
        return parse_seconds(values[0], maximum=MAX_WAIT)
    except NumberError as exc:
        raise error(400, f"wait: {exc}") from None
