"""The gateway's access log: one JSON line per HTTP request, on standard error.

Each line has ``method``, ``path``, ``status``, ``bytes`` (the response body's size),
``duration`` (seconds, from the request's arrival to the response's last byte) and
``request_id`` when the request names one (the id a ``POST`` was given, or the one in a
``GET``/``DELETE`` path). It is an ASGI middleware around the gateway's HTTP handler; it is on
in ``chute dev`` and off in ``chute gateway`` unless ``--access-log`` or
``CHUTE_ACCESS_LOG=1`` (docs/gateway.md).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from chute.errors import InvalidRequestId
from chute.logs import JSONFormatter
from chute.protocol import validate_request_id

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The environment variable that switches it: 1/true/yes/on or 0/false/no/off.
ENV = "CHUTE_ACCESS_LOG"
#: Its logger; its lines go to standard error as JSON whatever the other logs' format.
logger = logging.getLogger("chute.access")
#: A POST's answer is read for its id only when it is this small (``{"id": "…"}`` is).
_ID_BODY_LIMIT = 256


class _Submitted(msgspec.Struct):
    id: str


_submitted = msgspec.json.Decoder(_Submitted)


def enabled(flag: bool | None, *, default: bool) -> bool:
    """The flag if given, else ``$CHUTE_ACCESS_LOG``, else ``default``."""
    if flag is not None:
        return flag
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return default


def configure() -> None:
    """Give the access logger its own JSON handler (once)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def with_access_log(app: ASGIApp) -> ASGIApp:
    """``app`` (an ASGI HTTP handler), logging one line per request."""
    configure()

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 0
        size = 0
        head = b""

        async def watching(message: Message) -> None:
            nonlocal status, size, head
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                size += len(body)
                if len(head) < _ID_BODY_LIMIT:
                    head += body[: _ID_BODY_LIMIT - len(head)]
            await send(message)

        try:
            await app(scope, receive, watching)
        finally:
            method = scope.get("method", "")
            path = scope.get("path", "")
            fields: dict[str, Any] = {
                "method": method,
                "path": path,
                "status": status or 499,  # no answer: the client went away first
                "bytes": size,
                "duration": round(time.perf_counter() - started, 6),
            }
            request_id = _request_id(method, path, status, head)
            if request_id is not None:
                fields["request_id"] = request_id
            logger.info(f"{method} {path} {fields['status']}", extra=fields)

    return logged


def _request_id(method: str, path: str, status: int, head: bytes) -> str | None:
    if method == "POST":
        if status != 200:
            return None
        try:
            return _submitted.decode(head).id
        except msgspec.DecodeError:
            return None
    prefix, _, last = path.rstrip("/").rpartition("/")
    if not prefix or not last or prefix.startswith(("/queues", "/ui")):
        return None
    try:
        return validate_request_id(last)
    except InvalidRequestId:
        return None
