"""An echo container: a user container for tests and benchmarks, a raw ASGI app that any ASGI
server runs (``python -m uvicorn chute.testing.echo:app --port 8080``). chute's benchmarks call
it, and so do the dequeuer's tests; a plugin author's end-to-end tests can use it too.

``POST /`` answers according to the ``X-Behaviour`` request header (the dequeuer forwards the
headers a request was submitted with):

* absent: ``200 application/json``, ``{"body": <the body as text>, "content_type": <its
  Content-Type>}`` when the body is at most :data:`ECHO_LIMIT` bytes, else ``{"bytes": n,
  "content_type": …}`` (a 100 MiB echo would make the caller hold the answer). The body is
  read chunk by chunk, never held whole unless calls are recorded;
* ``status:<code>``: that status with a JSON body;
* ``text``: ``200 text/plain``; ``invalid-json``: ``200 application/json`` that is not JSON;
* ``charset``: the echo as ``application/json; charset=utf-8``;
* ``png``: ``200 image/png`` with the request's body as the answer; ``untyped``: the same with
  no Content-Type at all;
* ``sleep:<seconds>``: echo after sleeping; if the caller closes the connection meanwhile, the
  call records ``disconnected`` (the time) and answers nothing;
* ``flaky:<code>:<n>``: the first ``n`` calls for this request id answer ``<code>``, later
  ones echo;
* ``exit``: the process dies mid-request (a crashed container).

Each POST's arrival time (``time.time()`` when it reaches the app) is kept under its
``X-Cortex-Request-ID``: ``GET /_arrivals`` returns them as JSON, ``DELETE /_arrivals``
forgets them (the benchmarks time the pick-up with them). With ``$ECHO_RECORD_CALLS=1``,
every call (headers, body, start and end time) is kept too and ``GET /calls`` lists them.
``GET /healthz`` is ready (200) while ``$READY_FILE`` exists (always, when it is unset).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The largest body echoed back as it is; a larger one is answered ``{"bytes": n}``.
ECHO_LIMIT = 64 * 1024
RECORD_CALLS = os.environ.get("ECHO_RECORD_CALLS", "") == "1"
#: Every call seen, when ``$ECHO_RECORD_CALLS=1``.
CALLS: list[dict[str, Any]] = []
#: Calls per request id.
SEEN: dict[str, int] = {}
ARRIVALS: dict[str, float] = {}
_JSON = "application/json"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
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
    if method == "POST" and path == "/":
        await _post(scope, receive, send, arrived)
    elif path == "/_arrivals":
        if method == "DELETE":
            ARRIVALS.clear()
        await respond(send, 200, json.dumps(ARRIVALS).encode(), _JSON)
    elif method == "GET" and path == "/healthz":
        ready_file = os.environ.get("READY_FILE")
        if ready_file is None or os.path.exists(ready_file):  # noqa: ASYNC240
            await respond(send, 200, b"ok", "text/plain")
        else:
            await respond(send, 503, b"not ready", "text/plain")
    elif method == "GET" and path == "/calls":
        await respond(send, 200, json.dumps(CALLS).encode(), _JSON)
    else:
        await respond(send, 404, b"{}", _JSON)


async def _post(scope: Scope, receive: Receive, send: Send, arrived: float) -> None:
    request_id = content_type = None
    behaviour = ""
    for name, value in scope["headers"]:
        if name == b"x-cortex-request-id":
            request_id = value.decode("latin-1")
        elif name == b"x-behaviour":
            behaviour = value.decode("latin-1")
        elif name == b"content-type":
            content_type = value.decode("latin-1")
    if request_id is not None:
        ARRIVALS[request_id] = arrived
        SEEN[request_id] = SEEN.get(request_id, 0) + 1
    call: dict[str, Any] = {"id": request_id, "started": arrived, "finished": None}
    if RECORD_CALLS:
        call["headers"] = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        CALLS.append(call)
    kept = bytearray()
    size = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if RECORD_CALLS or behaviour or size <= ECHO_LIMIT:
            kept += chunk
    body = bytes(kept)
    if RECORD_CALLS:
        call["body_b64"] = base64.b64encode(body).decode()
    if behaviour.startswith("sleep:"):
        gone = asyncio.ensure_future(_disconnected(receive))
        done, _ = await asyncio.wait({gone}, timeout=float(behaviour.partition(":")[2]))
        if done:
            call["disconnected"] = call["finished"] = time.time()
            return
        gone.cancel()
    if behaviour.startswith("flaky:"):
        _, code, times = behaviour.split(":")
        if SEEN.get(request_id or "", 0) <= int(times):
            behaviour = f"status:{code}"
    call["finished"] = time.time()
    if behaviour == "exit":
        os._exit(3)
    elif behaviour.startswith("status:"):
        await respond(send, int(behaviour.partition(":")[2]), b'{"error": "boom"}', _JSON)
    elif behaviour == "text":
        await respond(send, 200, b"hello", "text/plain")
    elif behaviour == "invalid-json":
        await respond(send, 200, b"{not json", _JSON)
    elif behaviour == "png":
        await respond(send, 200, body, "image/png")
    elif behaviour == "untyped":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    else:
        echo: dict[str, Any] = {"content_type": content_type}
        if size <= ECHO_LIMIT:
            echo["body"] = body.decode("utf-8", "replace")
        else:
            echo["bytes"] = size
        kind = "application/json; charset=utf-8" if behaviour == "charset" else _JSON
        await respond(send, 200, json.dumps(echo).encode(), kind)


async def _disconnected(receive: Receive) -> None:
    """Return when the client closes the connection (the body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
