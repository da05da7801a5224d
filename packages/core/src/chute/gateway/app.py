"""The gateway: a raw ASGI application (no framework; this is the hot path).

One queue and one store client per process, opened at lifespan startup and closed at
shutdown. ``POST <endpoint>`` streams the body into the store and enqueues the id;
``GET <endpoint>/<id>`` reads the record and splices the stored result bytes into the answer
without decoding them (``?wait=`` long-polls through one shared watch per id);
``DELETE <endpoint>/<id>`` cancels. See docs/gateway.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl

import anyio
import anyio.abc
import msgspec

from chute.backends.base import DEFAULT_RETENTION, Joint, Queue, Store
from chute.backends.urls import redact
from chute.config import API
from chute.errors import (
    BackendUnavailable,
    ChuteError,
    ConfigError,
    Conflict,
    InvalidRequestId,
    NotFound,
    PayloadTooLarge,
    TransitionRejected,
)
from chute.gateway import coalesce
from chute.gateway.access_log import with_access_log
from chute.gateway.auth import KeyRing, bearer_token, read_api_keys
from chute.gateway.controls import (
    IDEMPOTENCY_HEADER,
    ControlError,
    Controls,
    idempotent_id,
    is_control,
    parse_controls,
)
from chute.gateway.cors import ANY_ORIGIN, CORSPolicy, with_cors
from chute.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chute.gateway.metrics import GatewayMetrics
from chute.gateway.numbers import NumberError, parse_seconds
from chute.gateway.openapi import openapi_document
from chute.gateway.outcome import (
    UNCONFIRMED_ERROR,
    Settled,
    is_refused,
    settle,
)
from chute.gateway.responses import (
    JSON,
    HealthResponse,
    HTTPError,
    QueueResponse,
    Response,
    encoder,
    error,
)
from chute.gateway.routing import METHODS, Kind, Route, Router, origin_path
from chute.gateway.watch import MAX_WAIT, Observation, Watcher
from chute.lifecycle import queue_deadline_passed
from chute.protocol import (
    EXTRA_RESULT_TYPE,
    EXTRA_WEBHOOK_URL,
    HOP_BY_HOP_HEADERS,
    WEBHOOK_HEADER,
    RequestRecord,
    Status,
    SubmitResponse,
    new_request_id,
    now,
    result_response,
    validate_request_id,
)
from chute.registry import open_queue, open_store
from chute.webhook_targets import TargetRefused, check_request_url
from chute.webhooks import WebhookSender

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Default limit on a request body: 100 MiB.
DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024
#: Default limit on a submit's header block (names, values and their separators), as the
#: container's server commonly has it: 8 KiB.
DEFAULT_MAX_HEADER_SIZE = 8 * 1024
#: Default seconds a request body may pause between two pieces, and take in all.
DEFAULT_BODY_IDLE_TIMEOUT = 15.0
DEFAULT_BODY_TIMEOUT = 300.0
#: Seconds /healthz waits for the backends before calling them down.
HEALTH_TIMEOUT = 2.0
#: Seconds an enqueue may take before the submit gives up (and settles the stored record).
ENQUEUE_TIMEOUT = 30.0
#: Seconds a submit whose create or enqueue had an unknown outcome keeps asking the store
#: what happened before it answers (see ``chute.gateway.outcome`` and docs/gateway.md).
SETTLE_TIMEOUT = 10.0
#: Seconds a submit cancelled mid-create (the server stops) may take to settle its record.
CANCELLED_SETTLE_TIMEOUT = 5.0
#: Seconds to read and drop the rest of a body answered early, and to keep emptying the
#: server's queue while the connection closes after that (see ``_finish_early``).
DRAIN_TIME = 5.0
DRAIN_GRACE = 1.0
#: What a 503 tells clients to wait before retrying, in seconds.
RETRY_AFTER = b"1"
#: The ``WWW-Authenticate`` challenge of a 401 (RFC 6750).
CHALLENGE = b'Bearer realm="chute"'
#: ``RequestRecord.extra`` keys of an idempotent submit: its key and its body's SHA-256.
EXTRA_IDEMPOTENCY_KEY = "idempotency_key"
EXTRA_BODY_SHA256 = "body_sha256"
#: Set on an idempotent request's record once its message is queued: a repeat of the key is
#: answered with the id only then, never for a request whose enqueue may still fail.
EXTRA_ENQUEUED = "enqueued"

# RFC 9110 media type: token "/" token, then optional parameters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}\s*(;.*)?$")

logger = logging.getLogger("chute.gateway")


class _Disconnected(Exception):
    """The client went away before its body arrived; there is no one left to answer."""


def _header_size(headers: Sequence[tuple[bytes, bytes]]) -> int:
    """The size of a header block on the wire: ``name: value\r\n`` per header."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


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
    stops at ``limit`` bytes. Flags say why it stopped, whatever the store wraps it in.

    With ``digest_into`` (a dict), the body's SHA-256 is computed on the way and written into
    it under ``body_sha256`` once the last chunk has been read: a store fills in
    ``payload_size`` after the body's end, so a record that holds that dict as its ``extra``
    is stored with the hash (the gateway checks, and annotates the record otherwise).
    """

    __slots__ = (
        "deadline",
        "digest_into",
        "disconnected",
        "ended",
        "hasher",
        "idle",
        "limit",
        "receive",
        "size",
        "timed_out",
        "too_large",
    )

    def __init__(
        self,
        receive: Receive,
        limit: int,
        digest_into: dict[str, Any] | None = None,
        *,
        idle: float = math.inf,
        deadline: float = math.inf,
    ) -> None:
        self.receive = receive
        self.limit = limit
        #: Seconds the body may pause between two pieces; the ``time.monotonic()`` instant by
        #: which it must have ended. Past either: 408.
        self.idle = idle
        self.deadline = deadline
        self.size = 0
        self.too_large = False
        self.disconnected = False
        self.timed_out = False
        self.ended = False
        self.digest_into = digest_into
        self.hasher = hashlib.sha256() if digest_into is not None else None

    @property
    def sha256(self) -> str:
        assert self.hasher is not None
        return self.hasher.hexdigest()

    async def drain(self) -> None:
        """Read (and hash) the rest of the body, within the limit, keeping nothing."""
        async for _ in self.chunks():
            pass

    async def chunks(self) -> AsyncIterator[bytes]:
        more = not self.ended
        while more:
            left = self.deadline - time.monotonic()
            try:
                with anyio.fail_after(max(0.0, min(self.idle, left))):
                    message = await self.receive()
            except TimeoutError:
                self.timed_out = True
                why = "paused too long" if self.idle < left else "took too long in all"
                raise error(408, f"the request body {why}; nothing was queued") from None
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
                if self.hasher is not None:
                    self.hasher.update(chunk)
                yield chunk
        self.ended = True
        if self.digest_into is not None:
            self.digest_into[EXTRA_BODY_SHA256] = self.sha256


class Gateway:
    """The ASGI application for a list of APIs.

    ``queue_url`` and ``store_url`` name the backends (``sqlite:///…``, ``redis://…``); they
    are opened once, at lifespan startup. A backend that cannot be reached then is opened
    again on the next request that needs it, so the gateway starts (and reports 503 and an
    unhealthy ``/healthz``) while a backend is down. Any other startup error (an unknown
    scheme, a bad URL) fails the startup and is kept in :attr:`startup_error`.

    ``api_keys`` are the global API keys; an API's ``auth:`` keys (read here, at construction)
    replace them for that API. No keys at all: the gateway is open. ``protect_admin`` puts
    ``/metrics`` and ``/queues/*`` behind the global keys too. ``cors`` says which browser
    origins may call it (any, as Cortex's gateway; None: no CORS headers). The ASGI lifespan
    must run (any ASGI server does it): long-polls and webhooks live in it.
    """

    def __init__(
        self,
        apis: Sequence[API],
        *,
        queue_url: str,
        store_url: str,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        retention: float = DEFAULT_RETENTION,
        api_keys: Sequence[str] = (),
        protect_admin: bool = False,
        access_log: bool = False,
        cors: CORSPolicy | None = ANY_ORIGIN,
        settle_timeout: float = SETTLE_TIMEOUT,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        if max_body_size < 0:
            raise ValueError("max_body_size must not be negative")
        if max_header_size <= 0 or body_idle_timeout <= 0 or body_timeout <= 0:
            raise ValueError("max_header_size and the body timeouts must be above 0")
        self.max_header_size = max_header_size
        self.body_idle_timeout = body_idle_timeout
        self.body_timeout = body_timeout
        self.apis = list(apis)
        self.router = Router(self.apis)
        self.queue_url = queue_url
        self.store_url = store_url
        self.max_body_size = max_body_size
        self.retention = retention
        self.global_keys = KeyRing(api_keys)
        if protect_admin and not self.global_keys:
            raise ConfigError(
                "--protect-admin needs global API keys (--api-keys-file or $CHUTE_API_KEYS)"
            )
        self.protect_admin = protect_admin
        self.settle_timeout = settle_timeout
        #: Set at first and whenever a submit met an unreachable store: the next submits ping
        #: the backends first (an error then is definite, as nothing was written) until they
        #: answer, so only submits caught mid-write by an outage need settling.
        self._suspect = True
        #: Settlements that outlived their submit (the lifespan's task group).
        self._background: anyio.abc.TaskGroup | None = None
        #: Submits answered with their id while the store was silent, still being settled in
        #: the background: until then a GET reads them as submitted, never as 404.
        self._unsettled: dict[tuple[str, str], RequestRecord] = {}
        self._keys = {
            api.name: KeyRing(read_api_keys(api)) or self.global_keys for api in self.apis
        }
        self._queue_deadlines = {api.name: api.deadlines.queue_seconds for api in self.apis}
        self.metrics = GatewayMetrics([api.name for api in self.apis])
        self.openapi = encoder.encode(
            openapi_document(
                self.apis,
                max_body_size=max_body_size,
                secured={name for name, ring in self._keys.items() if ring},
                protect_admin=protect_admin,
            )
        )
        self.queue: Queue | None = None
        self.store: Store | None = None
        #: The store's joint fast path with the queue (create and send in one step), once
        #: both are open; False when it has none.
        self._joint: Joint | Literal[False] | None = None
        self.startup_error: BaseException | None = None
        self.watcher = Watcher(self._watch_observe)
        self._by_name = {api.name: api for api in self.apis}
        self.webhooks: WebhookSender | None = None
        self._open_lock = anyio.Lock()
        self._handlers: dict[
            tuple[Kind, str], Callable[[Scope, _Receive, Route], Awaitable[Response]]
        ] = {
            (Kind.SUBMIT, "POST"): self._submit,
            (Kind.RESULT, "GET"): self._result,
            (Kind.RESULT, "DELETE"): self._cancel,
            (Kind.RESULT_BODY, "GET"): self._result_body,
            (Kind.HEALTH, "GET"): self._health,
            (Kind.METRICS, "GET"): self._metrics,
            (Kind.OPENAPI, "GET"): self._openapi,
            (Kind.QUEUE, "GET"): self._queue_depth,
        }
        #: HTTP requests go here: the handler, or the handler inside the access log.
        # CORS inside the access log, so that preflights answered by CORS are logged too.
        http = with_cors(self._http, cors)
        self._serve_http = with_access_log(http) if access_log else http

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve_http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets: not a route of ours; close the handshake politely
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with self.watcher.serving():
            message = await receive()
            if message["type"] != "lifespan.startup":  # pragma: no cover (ASGI says so)
                return
            try:
                await self.startup()
            except Exception as exc:
                self.startup_error = exc
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            async with (
                WebhookSender(observe=self._count_webhook) as sender,
                anyio.create_task_group() as background,
            ):
                self.webhooks = sender
                self._background = background
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass
                self.webhooks = None
                self._background = None
                background.cancel_scope.cancel()
            # Pending deliveries had their chance (they annotate records): close the backends.
            await self.shutdown()
            await send({"type": "lifespan.shutdown.complete"})

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

    def stopping(self) -> None:
        """The server stops taking requests: answer every waiting long-poll now."""
        self.watcher.release_all()

    async def shutdown(self) -> None:
        """Close the backend clients."""
        self.watcher.release_all()
        for backend in (self.queue, self.store):
            if backend is None:
                continue
            try:
                await backend.aclose()
            except Exception:
                logger.exception("closing a backend failed")
        self.queue = self.store = None
        self._joint = None

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

    async def _joint_path(self, store: Store) -> Joint | None:
        """The store's :class:`Joint` with the queue, if it has one (asked once)."""
        if self._joint is None:
            self._joint = store.joint(await self._queue()) or False
        return None if self._joint is False else self._joint

    # -- dispatch --------------------------------------------------------------------------

    def _authorize(self, scope: Scope, route: Route) -> None:
        """Raise 401 unless the request carries a key valid for its route."""
        if route.kind in (Kind.SUBMIT, Kind.RESULT):
            assert route.api is not None
            ring = self._keys[route.api.name]
        elif route.kind in (Kind.METRICS, Kind.QUEUE) and self.protect_admin:
            ring = self.global_keys
        else:
            return
        if not ring:
            return
        token = bearer_token(scope["headers"])
        if not ring.accepts(token):
            # Never the key itself in a message or a log line.
            message = "a valid API key is required: Authorization: Bearer <key>"
            if token is not None:
                message = "the API key is not valid for this route"
            raise HTTPError(401, "unauthorized", message, ((b"www-authenticate", CHALLENGE),))

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        path = scope["path"] = origin_path(scope["path"])
        route = self.router.match(path)
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
            self._authorize(scope, route)
            response = await self._handlers[route.kind, method](scope, tracked, route)
        except HTTPError as exc:
            response = exc.response()
        except BackendUnavailable as exc:
            where = {"api": api_label} if api_label else {"path": scope["path"]}
            logger.warning("backend unavailable", extra={**where, "error": str(exc)})
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
        long_poll = scope.get("chute.long_poll", False)
        if tracked.done or not _has_body(scope):
            await send(start)
            await send({"type": "http.response.body", "body": response.body})
            self.metrics.observe(
                api_label,
                method,
                response.status,
                time.perf_counter() - started,
                long_poll=long_poll,
            )
        elif response.status == 408:
            # A body too slow to wait for is not drained either: answer and close.
            headers.append((b"connection", b"close"))
            self.metrics.observe(api_label, method, response.status, time.perf_counter() - started)
            await send(start)
            await send({"type": "http.response.body", "body": response.body})
        else:
            headers.append((b"connection", b"close"))
            self.metrics.observe(api_label, method, response.status, time.perf_counter() - started)
            await _finish_early(send, start, response.body, tracked)

    # -- submit ----------------------------------------------------------------------------

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
        ``chute.gateway.outcome``): the answer when it runs (its id), None when it will not
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

    # -- one request -----------------------------------------------------------------------

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

    # -- the gateway's own routes ----------------------------------------------------------

    async def _health(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        waiting = f"the queue ({redact(self.queue_url)})"

        async def check() -> None:
            nonlocal waiting
            queue = await self._queue()
            await queue.ping()
            waiting = f"the store ({redact(self.store_url)})"
            store = await self._store()
            await store.ping()

        try:
            with anyio.fail_after(HEALTH_TIMEOUT):
                await check()
        except TimeoutError:
            raise BackendUnavailable(
                f"{waiting} did not answer within {HEALTH_TIMEOUT} s"
            ) from None
        except ChuteError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(str(exc)) from exc
        return Response(200, encoder.encode(HealthResponse()))

    async def _metrics(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        try:
            queue: Queue | None = await self._queue()
        except BackendUnavailable:
            queue = None  # the scrape still answers, without queue depth
        self.metrics.watched_requests.set(self.watcher.watched)
        body = await self.metrics.render(queue)
        return Response(200, body, METRICS_CONTENT_TYPE.encode())

    async def _openapi(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        return Response(200, self.openapi)

    async def _queue_depth(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        assert route.api is not None
        queue = await self._queue()
        if not queue.supports_depth:
            raise error(
                501,
                f"the queue of {route.api.name} ({type(queue).__name__}) cannot count its "
                "messages: no queue depth",
            )
        try:
            depth = await queue.depth(route.api.name)
        except BackendUnavailable:
            raise
        except ChuteError as exc:
            raise BackendUnavailable(str(exc)) from exc
        answer = QueueResponse(route.api.name, depth.queued, depth.in_flight, depth.dead)
        return Response(200, encoder.encode(answer))


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
