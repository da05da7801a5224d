"""The operators' dashboard at ``/ui/``: one HTML page, its script and style (shipped in the
wheel, no CDN) and the JSON it polls. See docs/dashboard.md.

Routes (all under ``/ui``; the gateway hands this module every path there):

=======  ====================================================  =============================
GET      ``/ui/``                                              the page (or the login form)
GET      ``/ui/assets/<file>``                                 script, style, icon
POST     ``/ui/login``, ``/ui/logout``                         form: ``key``, ``csrf``
GET      ``/ui/api/overview``                                  per API: depth, rates, listing
GET      ``/ui/api/apis/<api>/requests?status=&cursor=``       recent requests, newest first
GET      ``/ui/api/apis/<api>/requests/<id>``                  one request in detail
GET      ``/ui/api/apis/<api>/requests/<id>/payload``          its payload, as a download
POST     ``/ui/api/apis/<api>/requests/<id>/cancel``           cancel it
GET      ``/ui/api/apis/<api>/dead``                           the dead letter
POST     ``/ui/api/apis/<api>/dead/requeue``, ``…/dead/purge``  ``{"ids": [...]}`` optional
=======  ====================================================  =============================

With ``--protect-admin`` every route but the page, its assets and the login needs a session
signed in with a global key (a GET may present the key as ``Authorization: Bearer`` instead, as
``chute status`` does). Every POST needs the session's CSRF token; every answer carries a
strict Content-Security-Policy. Nothing the container returned is put into HTML on the server:
the JSON goes to the page's script, which shows it with ``textContent`` only.
"""

from __future__ import annotations

import hashlib
import html
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, quote

import anyio
import msgspec

from chute.backends.base import DeadLetter, QueueDepth
from chute.errors import BackendUnavailable, ChuteError, ProtocolError, Unsupported
from chute.gateway._auth import bearer_token
from chute.gateway._dashboard.session import (
    Session,
    Sessions,
    cookie_header,
    cookie_value,
)
from chute.gateway._dashboard.stats import Rates, recent_rates
from chute.gateway._responses import HTTPError, Response, error
from chute.gateway._routing import Kind, Route
from chute.protocol import (
    EXTRA_RESULT_TYPE,
    EXTRA_WEBHOOK,
    RequestRecord,
    Status,
    rfc3339,
    validate_request_id,
)
from chute.requeue import Requeue

if TYPE_CHECKING:
    from chute.gateway._app import Gateway

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The dashboard's path prefix.
PREFIX = "/ui"
#: Seconds one backend read of the overview may take before that API shows the error.
READ_TIMEOUT = 5.0
#: The largest POST body the dashboard reads (a login form, a list of ids).
MAX_BODY = 64 * 1024
#: How much of a result, and of a failed container's body, the detail shows.
PREVIEW_CHARS = 4000
#: Dead letters one page shows.
DEAD_LIMIT = 100

#: Every answer: only the page's own script, style and requests; no framing, no inline code.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)

ASSETS: dict[str, bytes] = {
    "app.js": b"text/javascript; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
HTML = b"text/html; charset=utf-8"
JSON = b"application/json"

logger = logging.getLogger("chute.gateway._dashboard")

_encoder = msgspec.json.Encoder()


def _asset(name: str) -> bytes:
    return resources.files("chute.gateway._dashboard").joinpath("assets", name).read_bytes()


class Dashboard:
    """The ``/ui`` routes of one :class:`~chute.gateway._app.Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sessions = Sessions(gateway.global_keys.digests)
        self.protected = gateway.protect_admin
        self._assets = {name: _asset(name) for name in ASSETS}
        self._pages = {name: _asset(name).decode() for name in ("index.html", "login.html")}

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = []
        try:
            response = await self._route(scope, receive, headers)
        except HTTPError as exc:
            response = exc.response()
        except BackendUnavailable as exc:
            response = error(503, str(exc), ((b"retry-after", b"1"),)).response()
        except Exception:
            logger.exception("dashboard error", extra={"path": scope["path"]})
            response = error(500, "internal error; see the gateway's log").response()
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(response.body)).encode()),
                    *SECURITY_HEADERS,
                    *response.headers,
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _route(
        self, scope: Scope, receive: Receive, set_headers: list[tuple[bytes, bytes]]
    ) -> Response:
        method: str = scope["method"]
        path: str = scope["path"]
        rest = path[len(PREFIX) :]
        session = self.sessions.decode(cookie_value(scope["headers"]))
        if rest == "":
            return Response(308, b"", HTML, ((b"location", b"/ui/"),))
        if rest == "/":
            _allow(method, "GET", "HEAD")
            if session is None:
                session = self.sessions.new()
                set_headers.append(self._cookie(scope, session))
            return self._page(session)
        if rest.startswith("/assets/"):
            _allow(method, "GET", "HEAD")
            name = rest[len("/assets/") :]
            if name not in ASSETS:
                raise error(404, f"no dashboard asset {name!r}")
            return Response(200, self._assets[name], ASSETS[name])
        if rest == "/login":
            _allow(method, "POST")
            return await self._login(scope, receive, session, set_headers)
        if rest == "/logout":
            _allow(method, "POST")
            form = await _form(scope, receive)
            self._check_csrf(scope, session, form.get("csrf"))
            set_headers.append(self._cookie(scope, self.sessions.new()))
            return Response(303, b"", HTML, ((b"location", b"/ui/"),))
        if rest.startswith("/api/"):
            return await self._api(scope, receive, session, rest[len("/api/") :].split("/"))
        raise error(404, f"no dashboard page at {path}")

    def _cookie(self, scope: Scope, session: Session) -> tuple[bytes, bytes]:
        secure = scope.get("scheme") == "https"
        return (b"set-cookie", cookie_header(self.sessions.encode(session), secure=secure))

    # -- the page and the login ------------------------------------------------------------

    def _page(self, session: Session) -> Response:
        csrf = html.escape(self.sessions.csrf_token(session))
        if self.protected and not self.sessions.signed_in(session):
            return self._login_page(csrf, "")
        page = self._pages["index.html"].replace("{{csrf}}", csrf)
        page = page.replace("{{protected}}", "true" if self.protected else "false")
        return Response(200, page.encode(), HTML)

    def _login_page(self, csrf: str, message: str, status: int = 200) -> Response:
        page = self._pages["login.html"].replace("{{csrf}}", csrf)
        page = page.replace("{{error}}", html.escape(message))
        page = page.replace("{{error_hidden}}", "" if message else "hidden")
        return Response(status, page.encode(), HTML)

    async def _login(
        self,
        scope: Scope,
        receive: Receive,
        session: Session | None,
        set_headers: list[tuple[bytes, bytes]],
    ) -> Response:
        form = await _form(scope, receive)
        self._check_csrf(scope, session, form.get("csrf"))
        assert session is not None
        key = form.get("key", "")
        if not self.protected:
            return Response(303, b"", HTML, ((b"location", b"/ui/"),))
        if not key or not self.gateway.global_keys.accepts(key):
            logger.warning("dashboard login refused")  # never the key
            csrf = html.escape(self.sessions.csrf_token(session))
            return self._login_page(csrf, "That key is not one of the gateway's keys.", 401)
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        set_headers.append(self._cookie(scope, self.sessions.new(digest)))
        return Response(303, b"", HTML, ((b"location", b"/ui/"),))

    def _check_csrf(self, scope: Scope, session: Session | None, token: str | None) -> None:
        """403 unless the POST carries its session's CSRF token and comes from this origin."""
        origin = _header(scope, b"origin")
        host = _header(scope, b"host")
        if origin is not None and (host is None or origin.partition("://")[2] != host):
            raise HTTPError(403, "forbidden", "cross-origin request refused")
        if not self.sessions.csrf_ok(session, token):
            raise HTTPError(
                403,
                "forbidden",
                "missing or wrong CSRF token: reload the dashboard and try again",
            )

    def _check_access(self, scope: Scope, session: Session | None, method: str) -> None:
        if not self.protected or self.sessions.signed_in(session):
            return
        if method == "GET" and self.gateway.global_keys.accepts(bearer_token(scope["headers"])):
            return
        raise HTTPError(
            401, "unauthorized", "sign in to the dashboard with a global API key (at /ui/)"
        )

    # -- JSON ------------------------------------------------------------------------------

    async def _api(
        self, scope: Scope, receive: Receive, session: Session | None, parts: list[str]
    ) -> Response:
        method: str = scope["method"]
        self._check_access(scope, session, method)
        if parts == ["overview"]:
            _allow(method, "GET")
            return _json(await self._overview())
        if len(parts) < 3 or parts[0] != "apis":
            raise error(404, "no such dashboard route")
        api = self._api_name(parts[1])
        tail = parts[2:]
        if method == "POST" or _is_action(tail):
            _allow(method, "POST")
            body = await _read(scope, receive)
            self._check_csrf(scope, session, _header(scope, b"x-csrf-token"))
            return await self._action(scope, receive, api, tail, body)
        _allow(method, "GET")
        if tail == ["requests"]:
            return _json(await self._requests(api, _query(scope)))
        if len(tail) == 2 and tail[0] == "requests":
            return _json(await self._detail(api, _request_id(tail[1])))
        if len(tail) == 3 and tail[0] == "requests" and tail[2] == "payload":
            return await self._payload(api, _request_id(tail[1]))
        if tail == ["dead"]:
            return _json(await self._dead(api))
        raise error(404, "no such dashboard route")

    def _api_name(self, name: str) -> str:
        if name not in {api.name for api in self.gateway.apis}:
            raise error(404, f"no API named {name!r}")
        return name

    async def _overview(self) -> dict[str, Any]:
        store = await self.gateway._store()
        listing = store.supports_listing
        apis = []
        for api in self.gateway.apis:
            entry: dict[str, Any] = {
                "name": api.name,
                "endpoint": api.endpoint,
                "listing": listing,
                "depth": None,
                "rates": None,
            }
            try:
                with anyio.fail_after(READ_TIMEOUT):
                    depth = await (await self.gateway._queue()).depth(api.name)
                entry["depth"] = _depth(depth)
            except (ChuteError, TimeoutError) as exc:
                entry["depth_error"] = _why(exc)
            if listing:
                try:
                    with anyio.fail_after(READ_TIMEOUT):
                        rates: Rates = await recent_rates(store, api.name)
                    entry["rates"] = msgspec.to_builtins(rates)
                except (ChuteError, TimeoutError) as exc:
                    entry["rates_error"] = _why(exc)
            apis.append(entry)
        return {
            "protected": self.protected,
            "store": type(store).__name__,
            "listing": listing,
            "apis": apis,
        }

    async def _requests(self, api: str, query: dict[str, str]) -> dict[str, Any]:
        store = await self.gateway._store()
        if not store.supports_listing:
            return {"listing": False, "reason": _cannot_list(store), "records": []}
        status: Status | None = None
        if query.get("status"):
            try:
                status = Status(query["status"])
            except ValueError:
                raise error(400, f"unknown status {query['status']!r}") from None
        try:
            limit = int(query.get("limit", "50"))
            page = await store.list_requests(
                api, status=status, limit=limit, cursor=query.get("cursor") or None
            )
        except (ValueError, ProtocolError) as exc:
            raise error(400, str(exc)) from None
        except Unsupported:
            return {"listing": False, "reason": _cannot_list(store), "records": []}
        return {
            "listing": True,
            "records": [_summary(r) for r in page.records],
            "cursor": page.cursor,
        }

    async def _detail(self, api: str, request_id: str) -> dict[str, Any]:
        store = await self.gateway._store()
        seen = await self.gateway._observe(store, api, request_id)
        record = seen.record
        if record is None:
            raise error(404, f"request {request_id} of API {api} not found (or expired)")
        detail = _summary(record)
        detail.update(
            {
                "api": api,
                "expires_at": rfc3339(record.expires_at),
                "content_type": record.content_type,
                "payload_size": record.payload_size,
                # Header names only: a value may be a credential for the container.
                "header_names": sorted({name for name, _ in record.headers}),
                "queue_deadline": record.queue_deadline,
                "timeout": record.timeout,
                "cancel_requested": record.cancel_requested,
                "webhook": record.extra.get(EXTRA_WEBHOOK),
                "payload_url": (
                    f"{PREFIX}/api/apis/{quote(api, safe='')}/requests/{record.id}/payload"
                ),
            }
        )
        if record.error is not None:
            detail["error"] = _error(record, full=True)
        if record.status is Status.COMPLETED:
            kind = record.extra.get(EXTRA_RESULT_TYPE)
            if isinstance(kind, str):
                stored = await store.result(api, request_id)
                detail["result"] = {
                    "type": kind,
                    "size": None if stored is None else len(stored),
                    "preview": None,
                }
            else:
                raw = seen.result or b""
                text = raw[: PREVIEW_CHARS * 4].decode("utf-8", "replace")
                detail["result"] = {
                    "type": "application/json",
                    "size": len(raw),
                    "preview": text[:PREVIEW_CHARS],
                    "truncated": len(raw) > len(text[:PREVIEW_CHARS].encode()),
                }
        return detail

    async def _payload(self, api: str, request_id: str) -> Response:
        store = await self.gateway._store()
        record = await store.get(api, request_id)
        if record is None:
            raise error(404, f"request {request_id} of API {api} not found (or expired)")
        chunks = [chunk async for chunk in store.payload(api, request_id)]
        disposition = f'attachment; filename="{request_id}.payload"'.encode()
        # Never rendered by the browser: a download, whatever the client sent as its type.
        return Response(
            200,
            b"".join(chunks),
            b"application/octet-stream",
            ((b"content-disposition", disposition),),
        )

    async def _dead(self, api: str) -> dict[str, Any]:
        queue = await self.gateway._queue()
        if not queue.supports_dead_letter:
            return {"supported": False, "reason": _cannot(queue, "keep a dead letter"), "items": []}
        try:
            letters: list[DeadLetter] = await queue.list_dead(api, limit=DEAD_LIMIT)
            total = (await queue.depth(api)).dead if queue.supports_depth else len(letters)
        except BackendUnavailable:
            raise
        except ChuteError as exc:
            return {"supported": False, "reason": str(exc), "items": []}
        return {
            "supported": True,
            "total": total,
            "items": [
                {
                    "id": d.request_id,
                    "reason": d.reason,
                    "attempts": d.attempts,
                    "dead_at": rfc3339(d.dead_at),
                }
                for d in letters
            ],
        }

    async def _action(
        self, scope: Scope, receive: Receive, api: str, tail: list[str], body: bytes
    ) -> Response:
        if len(tail) == 3 and tail[0] == "requests" and tail[2] == "cancel":
            request_id = _request_id(tail[1])
            named = self.gateway._by_name[api]
            # The gateway's own DELETE (webhook, lazy expiry, 404/409), which reads no body.
            answer = await self.gateway._cancel(
                scope, cast(Any, receive), Route(Kind.RESULT, named, request_id)
            )
            logger.info(
                "request cancelled from the dashboard", extra={"api": api, "request_id": request_id}
            )
            return answer
        if tail == ["dead", "requeue"]:
            ids = _ids(body)
            mover = Requeue(api, await self.gateway._queue(), await self.gateway._store())
            if ids is None:
                await mover.every()
            else:
                await mover.these(ids)
            logger.info(
                "dead letters requeued from the dashboard", extra={"api": api, "moved": mover.moved}
            )
            return _json({"requeued": mover.moved, "notes": mover.notes})
        if tail == ["dead", "purge"]:
            purged = await (await self.gateway._queue()).purge_dead(api)
            logger.info(
                "dead letter purged from the dashboard", extra={"api": api, "purged": purged}
            )
            return _json({"purged": purged})
        raise error(404, "no such dashboard action")


# -- helpers -------------------------------------------------------------------------------


def _is_action(tail: list[str]) -> bool:
    """Whether ``tail`` (after ``/ui/api/apis/<api>/``) names a POST-only action."""
    return tail in (["dead", "requeue"], ["dead", "purge"]) or (
        len(tail) == 3 and tail[0] == "requests" and tail[2] == "cancel"
    )


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise error(
            405,
            f"{method} is not allowed here; allowed: {', '.join(allowed)}",
            ((b"allow", ", ".join(allowed).encode()),),
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


async def _read(scope: Scope, receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY:
            raise error(413, f"a dashboard request holds at most {MAX_BODY} bytes")
    return body


async def _form(scope: Scope, receive: Receive) -> dict[str, str]:
    body = await _read(scope, receive)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _ids(body: bytes) -> list[str] | None:
    """The ``ids`` of a requeue's JSON body; None (every one) when absent."""
    if not body.strip():
        return None
    try:
        data = msgspec.json.decode(body, type=dict[str, list[str] | None])
    except msgspec.DecodeError:
        raise error(400, 'the body must be {"ids": ["<id>", ...]} or empty') from None
    ids = data.get("ids")
    return None if ids is None else [_request_id(i) for i in ids]


def _request_id(text: str) -> str:
    try:
        return validate_request_id(text)
    except ProtocolError:
        raise error(404, f"request {text!r} not found") from None


def _json(data: Any) -> Response:
    return Response(200, _encoder.encode(data), JSON)


def _depth(depth: QueueDepth) -> dict[str, int]:
    return {
        "queued": depth.queued,
        "in_flight": depth.in_flight,
        "delayed": depth.delayed,
        "dead": depth.dead,
    }


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {READ_TIMEOUT} s"
    return str(exc)


def _cannot(backend: object, what: str) -> str:
    return f"this backend ({type(backend).__name__}) cannot {what}"


def _cannot_list(store: object) -> str:
    return (
        f"this store ({type(store).__name__}) cannot list requests; "
        "see docs/dashboard.md for the backends that can"
    )


def _error(record: RequestRecord, *, full: bool) -> dict[str, Any] | None:
    if record.error is None:
        return None
    err: dict[str, Any] = {"type": record.error.type, "message": record.error.message}
    if record.error.status_code is not None:
        err["status_code"] = record.error.status_code
    if full and record.error.body is not None:
        err["body"] = record.error.body[:PREVIEW_CHARS]
    return err


def _summary(record: RequestRecord) -> dict[str, Any]:
    def ts(value: float | None) -> str | None:
        return None if value is None else rfc3339(value)

    return {
        "id": record.id,
        "status": record.status.value,
        "created_at": ts(record.created_at),
        "started_at": ts(record.started_at),
        "finished_at": ts(record.finished_at),
        "attempts": record.attempt,
        "error": _error(record, full=False),
    }
