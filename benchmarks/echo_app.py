"""The container every system calls: a minimal ASGI echo app, served by uvicorn (httptools,
uvloop) so that it is never the bottleneck.

* ``POST /`` answers 200 ``application/json``: the body itself when it is small, else
  ``{"bytes": n}`` (a 100 MiB echo would make the caller hold the answer, which is not what
  the large-payload scenario measures). The body is read chunk by chunk, never held whole.
* Each POST's arrival time (``time.time()``, taken when the request reaches the app) is kept
  under its ``X-Cortex-Request-ID``; ``GET /_arrivals`` returns them as JSON and
  ``DELETE /_arrivals`` forgets them. The idle scenario uses them to time the pick-up.
* ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

ECHO_LIMIT = 64 * 1024
_JSON = [(b"content-type", b"application/json")]
_arrivals: dict[str, float] = {}


async def _answer(send: Callable[[dict[str, Any]], Awaitable[None]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    arrived = time.time()
    method, path = scope["method"], scope["path"]
    if path == "/_arrivals":
        if method == "DELETE":
            _arrivals.clear()
        await _answer(send, json.dumps(_arrivals).encode())
        return
    if method != "POST":
        await _answer(send, b'{"ok": true}')
        return
    for name, value in scope["headers"]:
        if name == b"x-cortex-request-id":
            _arrivals[value.decode()] = arrived
            break
    kept = bytearray()
    size = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size <= ECHO_LIMIT:
            kept += chunk
    await _answer(send, bytes(kept) if size <= ECHO_LIMIT else b'{"bytes": %d}' % size)
