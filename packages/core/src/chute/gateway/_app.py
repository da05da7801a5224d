"""The gateway: a raw ASGI application (no framework; this is the hot path).

One queue and one store client per process, opened at lifespan startup and closed at
shutdown. ``POST <endpoint>`` streams the body into the store and enqueues the id;
``GET <endpoint>/<id>`` reads the record and splices the stored result bytes into the answer
without decoding them (``?wait=`` long-polls through one shared watch per id);
``DELETE <endpoint>/<id>`` cancels. See docs/gateway.md.

The routes live in rooms beside it (``_submit``, ``_results``, ``_admin``, over the shared
``_state`` and the body plumbing in ``_body``); this module assembles them: the class, its
route table, the ASGI entry, the lifespan and the dispatch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import anyio
import anyio.abc

from chute.backends.base import DEFAULT_RETENTION, Joint, Queue, Store
from chute.config import API
from chute.errors import BackendUnavailable, ConfigError
from chute.gateway._access_log import with_access_log
from chute.gateway._admin import AdminRoutes
from chute.gateway._auth import KeyRing, bearer_token, read_api_keys
from chute.gateway._body import (
    DEFAULT_BODY_IDLE_TIMEOUT,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    DRAIN_GRACE,
    DRAIN_TIME,
    EXTRA_BODY_SHA256,
    Message,
    Receive,
    Scope,
    Send,
    _Disconnected,
    _finish_early,
    _has_body,
    _Receive,
)
from chute.gateway._cors import ANY_ORIGIN, CORSPolicy, with_cors
from chute.gateway._dashboard import with_dashboard
from chute.gateway._metrics import GatewayMetrics
from chute.gateway._openapi import openapi_document
from chute.gateway._responses import HTTPError, Response, encoder, error
from chute.gateway._results import ResultRoutes
from chute.gateway._routing import METHODS, Kind, Route, Router, origin_path
from chute.gateway._state import HEALTH_TIMEOUT
from chute.gateway._submit import (
    CANCELLED_SETTLE_TIMEOUT,
    ENQUEUE_TIMEOUT,
    EXTRA_ENQUEUED,
    EXTRA_IDEMPOTENCY_KEY,
    SETTLE_TIMEOUT,
    SubmitRoutes,
)
from chute.gateway._watch import Watcher
from chute.protocol import RequestRecord
from chute.webhooks import WebhookSender

#: What a 503 tells clients to wait before retrying, in seconds.
RETRY_AFTER = b"1"
#: The ``WWW-Authenticate`` challenge of a 401 (RFC 6750).
CHALLENGE = b'Bearer realm="chute"'

logger = logging.getLogger("chute.gateway")


class Gateway(SubmitRoutes, ResultRoutes, AdminRoutes):
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
        http = with_dashboard(self, with_cors(self._http, cors))
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


__all__ = [
    "CANCELLED_SETTLE_TIMEOUT",
    "DEFAULT_BODY_IDLE_TIMEOUT",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "DRAIN_GRACE",
    "DRAIN_TIME",
    "ENQUEUE_TIMEOUT",
    "EXTRA_BODY_SHA256",
    "EXTRA_ENQUEUED",
    "EXTRA_IDEMPOTENCY_KEY",
    "HEALTH_TIMEOUT",
    "SETTLE_TIMEOUT",
    "Gateway",
    "Message",
    "Receive",
    "Scope",
    "Send",
]
