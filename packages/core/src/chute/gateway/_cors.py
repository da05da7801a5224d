"""CORS, as Cortex's gateway answered it: browsers may call the gateway from any origin.

Cortex wrapped its async gateway in gorilla's CORS handler (origins ``*``, credentials allowed,
methods ``GET, HEAD, POST, PUT, OPTIONS``, exposed ``Content-Length, Content-Range``); chute
answers the same, configurable (``chute gateway --cors-origins``), with what chute adds:

* ``DELETE`` (cancel) among the methods, and any request header a preflight asks for — chute's
  own (``Authorization``, ``Idempotency-Key``, ``X-Chute-*``) are needed by browser clients;
* ``Retry-After`` and ``X-Cortex-Request-ID`` among the exposed headers;
* the request's ``Origin`` echoed (with ``Vary: Origin``) rather than ``*`` when credentials are
  allowed, since browsers refuse ``*`` with credentials.

A request without ``Origin`` (every non-browser client) passes through untouched: one scan of
its raw headers is all it costs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from chute.errors import ConfigError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The methods a browser may use, Cortex's plus DELETE (cancel).
ALLOW_METHODS = b"GET, HEAD, POST, PUT, DELETE, OPTIONS"
#: The response headers a browser script may read.
EXPOSE_HEADERS = b"Content-Length, Content-Range, Retry-After, X-Cortex-Request-ID"
#: How long a browser may cache a preflight answer, in seconds.
MAX_AGE = b"600"


@dataclass(frozen=True)
class CORSPolicy:
    """Which origins may call the gateway from a browser."""

    #: ``("*",)``: any origin (Cortex's default); else exact origins (``https://app.example``).
    origins: tuple[str, ...] = ("*",)
    #: Whether browsers may send cookies and ``Authorization`` (Cortex allowed them).
    allow_credentials: bool = True

    @classmethod
    def parse(cls, text: str) -> CORSPolicy | None:
        """``--cors-origins``: ``*``, a comma-separated list of origins, or ``none`` (no CORS)."""
        words = tuple(w.strip().rstrip("/") for w in text.split(",") if w.strip())
        if not words or words == ("none",):
            return None
        for word in words:
            if word != "*" and "://" not in word:
                raise ConfigError(
                    f"--cors-origins: {word!r} is not an origin "
                    "(scheme://host[:port], '*' for any, or 'none')"
                )
        if "*" in words and len(words) > 1:
            raise ConfigError("--cors-origins: '*' already allows every origin; give it alone")
        return cls(origins=words)

    def allows(self, origin: bytes) -> bool:
        return self.origins == ("*",) or origin.decode("latin-1") in self.origins


#: Cortex's default: any origin, credentials allowed.
ANY_ORIGIN = CORSPolicy()


def with_cors(app: ASGIApp, policy: CORSPolicy | None) -> ASGIApp:
    """``app`` answering CORS by ``policy`` (``app`` itself when ``policy`` is None)."""
    if policy is None:
        return app

    async def cors(scope: Scope, receive: Receive, send: Send) -> None:
        origin = preflight_method = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                preflight_method = value
        if origin is None:
            await app(scope, receive, send)
            return
        allowed = policy.allows(origin)
        if scope["method"] == "OPTIONS" and preflight_method is not None:
            await _preflight(scope, send, policy, origin if allowed else None)
            return
        if not allowed:
            await app(scope, receive, send)  # no CORS headers: the browser keeps it out
            return
        extra = _origin_headers(policy, origin) + [
            (b"access-control-expose-headers", EXPOSE_HEADERS)
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await app(scope, receive, send_with_cors)

    return cors


def _origin_headers(policy: CORSPolicy, origin: bytes) -> list[tuple[bytes, bytes]]:
    if policy.origins == ("*",) and not policy.allow_credentials:
        return [(b"access-control-allow-origin", b"*")]
    headers = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
    if policy.allow_credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    return headers


async def _preflight(scope: Scope, send: Send, policy: CORSPolicy, origin: bytes | None) -> None:
    if origin is None:
        body = msgspec.json.encode(
            {"error": {"type": "forbidden", "message": "this origin may not call the gateway"}}
        )
        await _answer(send, 403, [(b"content-type", b"application/json")], body)
        return
    requested = b""
    for name, value in scope["headers"]:
        if name == b"access-control-request-headers":
            requested = value
    headers = _origin_headers(policy, origin) + [
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-max-age", MAX_AGE),
    ]
    if requested:
        headers.append((b"access-control-allow-headers", requested))
    await _answer(send, 200, headers, b"")


async def _answer(
    send: Send, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
