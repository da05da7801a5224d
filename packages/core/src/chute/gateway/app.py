"""The gateway: a raw ASGI application (no framework; this is the hot path).

One queue and one store client per process, opened at lifespan startup and closed at
shutdown. ``POST <endpoint>`` streams the body into the store and enqueues the id;
``GET <endpoint>/<id>`` reads the record and splices the stored result bytes into the answer
without decoding them. See docs/gateway.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import msgspec

from chute.backends.base import DEFAULT_RETENTION, Queue, Store
from chute.config import API
from chute.errors import BackendUnavailable, ChuteError, InvalidRequestId, PayloadTooLarge
from chute.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chute.gateway.metrics import GatewayMetrics
from chute.gateway.openapi import openapi_document
from chute.gateway.responses import (
    HealthResponse,
    HTTPError,
    Response,
    encoder,
    error,
)
from chute.gateway.routing import METHODS, Kind, Route, Router
from chute.protocol import (
    HOP_BY_HOP_HEADERS,
    RequestRecord,
    Status,
    SubmitResponse,
    new_request_id,
    now,
    result_response,
    validate_request_id,
)
from chute.registry import open_queue, open_store

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Default limit on a request body: 100 MiB.
DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024
#: Seconds /healthz waits for the backends before calling them down.
HEALTH_TIMEOUT = 2.0
#: Seconds an enqueue may take before the submit gives up (and removes the stored record).
ENQUEUE_TIMEOUT = 30.0
#: Seconds to read and drop the rest of a body answered early, and to keep emptying the
#: server's queue while the connection closes after that (see ``_finish_early``).
DRAIN_TIME = 5.0
DRAIN_GRACE = 1.0
#: What a 503 tells clients to wait before retrying, in seconds.
RETRY_AFTER = b"1"

# RFC 9110 media type: token "/" token, then optional parameters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}\s*(;.*)?$")

logger = logging.getLogger("chute.gateway")


class _Disconnected(Exception):
    """The client went away before its body arrived; there is no one left to answer."""


class _Receive:
    """ASGI ``receive`` that remembers whether the request body was read to its end."""

    __slots__ = ("done", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.done = False

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            self.done = True
        return message


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _finish_early(send: Send, start: Message, body: bytes, receive: _Receive) -> None:
    """Answer a request whose body was not read to its end (413, 404, ...).

    The whole answer goes out at once (``more_body`` keeps the exchange open), then the rest
    of the body is read and dropped for up to :data:`DRAIN_TIME` seconds before the exchange
    ends and hypercorn closes the connection: closing while the client still sends would make
    the kernel reset the connection, and the client could lose the answer.
    """
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": True})
    with anyio.move_on_after(DRAIN_TIME):
        while not receive.done:
            await receive()
    if receive.done:
        await send({"type": "http.response.body", "body": b""})
        return

    # Still sending after DRAIN_TIME. hypercorn pushes body chunks into a bounded queue that
    # only the app reads, and closing the exchange (inside our last send) waits on that
    # queue: keep emptying it while, and shortly after, the connection closes.
    async def swallow() -> None:
        with anyio.move_on_after(DRAIN_GRACE):
            while True:
                await receive.receive()

    async with anyio.create_task_group() as tg:
        tg.start_soon(swallow)
        await send({"type": "http.response.body", "body": b""})


class _Body:
    """Streams an ASGI request body to the store, never holding more than one chunk, and
    stops at ``limit`` bytes. Flags say why it stopped, whatever the store wraps it in."""

    __slots__ = ("disconnected", "limit", "receive", "size", "too_large")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.size = 0
        self.too_large = False
        self.disconnected = False

    async def chunks(self) -> AsyncIterator[bytes]:
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                self.size += len(chunk)
                if self.size > self.limit:
                    self.too_large = True
                    raise PayloadTooLarge(self.limit)
                yield chunk


class Gateway:
    """The ASGI application for a list of APIs.

    ``queue_url`` and ``store_url`` name the backends (``sqlite:///…``, ``redis://…``); they
    are opened once, at lifespan startup. A backend that cannot be reached then is opened
    again on the next request that needs it, so the gateway starts (and reports 503 and an
    unhealthy ``/healthz``) while a backend is down. Any other startup error (an unknown
    scheme, a bad URL) fails the startup and is kept in :attr:`startup_error`.
    """

    def __init__(
        self,
        apis: Sequence[API],
        *,
        queue_url: str,
        store_url: str,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        retention: float = DEFAULT_RETENTION,
    ) -> None:
        if max_body_size < 0:
            raise ValueError("max_body_size must not be negative")
        self.apis = list(apis)
        self.router = Router(self.apis)
        self.queue_url = queue_url
        self.store_url = store_url
        self.max_body_size = max_body_size
        self.retention = retention
        self.metrics = GatewayMetrics([api.name for api in self.apis])
        self.openapi = encoder.encode(openapi_document(self.apis, max_body_size=max_body_size))
        self.queue: Queue | None = None
        self.store: Store | None = None
        self.startup_error: BaseException | None = None
        self._open_lock = anyio.Lock()
        self._handlers: dict[Kind, Callable[[Scope, Receive, Route], Awaitable[Response]]] = {
            Kind.SUBMIT: self._submit,
            Kind.RESULT: self._result,
            Kind.HEALTH: self._health,
            Kind.METRICS: self._metrics,
            Kind.OPENAPI: self._openapi,
        }

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets: not a route of ours; close the handshake politely
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    self.startup_error = exc
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Open the queue and the store (see the class docstring for unreachable ones)."""
        for role in ("queue", "store"):
            try:
                await self._open(role)
            except BackendUnavailable as exc:
                logger.warning(
                    "backend unavailable at startup; will retry on demand",
                    extra={"role": role, "error": str(exc)},
                )

    async def shutdown(self) -> None:
        """Close the backend clients."""
        for backend in (self.queue, self.store):
            if backend is None:
                continue
            try:
                await backend.aclose()
            except Exception:
                logger.exception("closing a backend failed")
        self.queue = self.store = None

    async def _open(self, role: str) -> None:
        async with self._open_lock:
            if role == "queue" and self.queue is None:
                self.queue = await anyio.to_thread.run_sync(open_queue, self.queue_url)
            elif role == "store" and self.store is None:
                self.store = await anyio.to_thread.run_sync(open_store, self.store_url)

    async def _queue(self) -> Queue:
        if self.queue is None:
            await self._open("queue")
        assert self.queue is not None
        return self.queue

    async def _store(self) -> Store:
        if self.store is None:
            await self._open("store")
        assert self.store is not None
        return self.store

    # -- dispatch --------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        route = self.router.match(scope["path"])
        api_label = route.api.name if route is not None and route.api is not None else ""
        tracked = _Receive(receive)
        try:
            if route is None:
                raise error(404, f"no API is served at {scope['path']}")
            allowed = METHODS[route.kind]
            if method not in allowed:
                raise error(
                    405,
                    f"{method} is not allowed on {scope['path']}; allowed: {', '.join(allowed)}",
                    ((b"allow", ", ".join(allowed).encode()),),
                )
            response = await self._handlers[route.kind](scope, tracked, route)
        except HTTPError as exc:
            response = exc.response()
        except BackendUnavailable as exc:
            logger.warning("backend unavailable", extra={"api": api_label, "error": str(exc)})
            response = error(503, str(exc), ((b"retry-after", RETRY_AFTER),)).response()
        except _Disconnected:
            self.metrics.observe(api_label, method, 499, time.perf_counter() - started)
            return
        except Exception:
            logger.exception(
                "unexpected error",
                extra={"api": api_label, "method": method, "path": scope["path"]},
            )
            response = error(500, "internal error; see the gateway's log").response()
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *response.headers,
        ]
        start = {"type": "http.response.start", "status": response.status, "headers": headers}
        if tracked.done or not _has_body(scope):
            await send(start)
            await send({"type": "http.response.body", "body": response.body})
            self.metrics.observe(api_label, method, response.status, time.perf_counter() - started)
        else:
            headers.append((b"connection", b"close"))
            self.metrics.observe(api_label, method, response.status, time.perf_counter() - started)
            await _finish_early(send, start, response.body, tracked)

    # -- handlers --------------------------------------------------------------------------

    async def _submit(self, scope: Scope, receive: Receive, route: Route) -> Response:
        assert route.api is not None
        api = route.api.name
        content_type: str | None = None
        content_length: bytes | None = None
        headers: list[tuple[str, str]] = []
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
            elif name not in HOP_BY_HOP_HEADERS:
                headers.append((name, raw_value.decode("latin-1")))

        store = await self._store()
        limit = self.max_body_size
        if store.max_payload_size is not None:
            limit = min(limit, store.max_payload_size)
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise error(400, f"invalid Content-Length {content_length!r}") from None
            if declared > limit:  # answered before reading a byte of the body
                raise error(413, f"body of {declared} bytes exceeds the limit of {limit} bytes")

        created = now()
        record = RequestRecord(
            id=new_request_id(),
            api=api,
            status=Status.IN_QUEUE,
            created_at=created,
            expires_at=created + self.retention,
            content_type=content_type,
            headers=headers,
        )
        body = _Body(receive, limit)
        try:
            await store.create(record, body.chunks())
        except PayloadTooLarge as exc:
            raise error(413, f"body exceeds the limit of {exc.limit} bytes") from None
        except Exception:
            # The store may wrap what our body iterator raised; the flags say what happened.
            if body.disconnected:
                raise _Disconnected from None
            if body.too_large:
                raise error(413, f"body exceeds the limit of {limit} bytes") from None
            raise

        # Shielded: once stored, the record must be either queued or removed, even if the
        # server cancels this task (shutdown), or it would stay in_queue forever.
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(ENQUEUE_TIMEOUT):
                    queue = await self._queue()
                    await queue.send(api, record.id)
            except TimeoutError:
                await self._forget(store, api, record.id)
                raise BackendUnavailable(
                    f"the queue did not answer within {ENQUEUE_TIMEOUT} s"
                ) from None
            except BaseException:
                await self._forget(store, api, record.id)
                raise
        return Response(200, encoder.encode(SubmitResponse(record.id)))

    async def _forget(self, store: Store, api: str, request_id: str) -> None:
        """Remove a record whose enqueue failed: the client gets an error, never its id."""
        try:
            await store.delete(api, request_id)
        except Exception:
            logger.exception(
                "enqueue failed and the record could not be removed; it stays in_queue "
                "until its retention ends",
                extra={"api": api, "request_id": request_id},
            )

    async def _result(self, scope: Scope, receive: Receive, route: Route) -> Response:
        assert route.api is not None
        api = route.api.name
        request_id = route.request_id
        try:
            validate_request_id(request_id)
        except InvalidRequestId:
            # Such an id can never have been issued: to the client it is simply not found.
            raise error(404, f"request {request_id!r} of API {api} not found") from None
        store = await self._store()
        record = await store.get(api, request_id)
        if record is None:
            raise error(404, f"request {request_id} of API {api} not found (or expired)")
        result: Any = msgspec.UNSET
        if record.status is Status.COMPLETED:
            stored = await store.result(api, request_id)
            if stored is None:
                logger.error(
                    "completed record has no result", extra={"api": api, "request_id": request_id}
                )
            # The stored bytes are JSON already: spliced in as they are, never re-encoded.
            result = msgspec.Raw(stored if stored is not None else b"null")
        return Response(200, encoder.encode(result_response(record, result)))

    async def _health(self, scope: Scope, receive: Receive, route: Route) -> Response:
        async def check() -> None:
            queue = await self._queue()
            store = await self._store()
            await queue.ping()
            await store.ping()

        try:
            with anyio.fail_after(HEALTH_TIMEOUT):
                await check()
        except TimeoutError:
            raise BackendUnavailable(
                f"the backends did not answer within {HEALTH_TIMEOUT} s"
            ) from None
        except ChuteError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(str(exc)) from exc
        return Response(200, encoder.encode(HealthResponse()))

    async def _metrics(self, scope: Scope, receive: Receive, route: Route) -> Response:
        try:
            queue: Queue | None = await self._queue()
        except BackendUnavailable:
            queue = None  # the scrape still answers, without queue depth
        body = await self.metrics.render(queue)
        return Response(200, body, METRICS_CONTENT_TYPE.encode())

    async def _openapi(self, scope: Scope, receive: Receive, route: Route) -> Response:
        return Response(200, self.openapi)
