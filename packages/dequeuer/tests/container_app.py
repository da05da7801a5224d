"""A user container for the dequeuer's tests: a small ASGI app, run by uvicorn as a process.

``POST /`` records the call (headers, body, start and end time) and answers according to the
``X-Behaviour`` request header, which the tests store with the request so that the dequeuer
forwards it:

* absent: ``200 application/json`` echoing the body and content type;
* ``status:<code>``: that status with a JSON body;
* ``text``: ``200 text/plain``;
* ``invalid-json``: ``200 application/json`` with a body that is not JSON;
* ``charset``: ``200 application/json; charset=utf-8``;
* ``png``: ``200 image/png`` with the request's body as the answer; ``untyped``: the same with
  no Content-Type at all;
* ``sleep:<seconds>``: echo after sleeping; if the dequeuer closes the connection meanwhile,
  the call records ``disconnected`` (the time) and answers nothing;
* ``flaky:<code>:<n>``: the first ``n`` calls for this request id answer ``<code>``, later
  ones echo;
* ``exit``: the process dies mid-request (a crashed container).

``GET /healthz`` is ready while ``$READY_FILE`` exists (always, when it is unset).
``GET /calls`` lists every call seen so far.
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

CALLS: list[dict[str, Any]] = []
SEEN: dict[str, int] = {}  # calls per request id


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == "/healthz":
        ready_file = os.environ.get("READY_FILE")
        if ready_file is None or os.path.exists(ready_file):  # noqa: ASYNC240
            await respond(send, 200, b"ok", "text/plain")
        else:
            await respond(send, 503, b"not ready", "text/plain")
    elif method == "GET" and path == "/calls":
        await respond(send, 200, json.dumps(CALLS).encode(), "application/json")
    elif method == "POST" and path == "/":
        await handle(scope, receive, send)
    else:
        await respond(send, 404, b"{}", "application/json")


async def handle(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
    call: dict[str, Any] = {"headers": headers, "started": time.time(), "finished": None}
    CALLS.append(call)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    lookup = {k.lower(): v for k, v in headers}
    call["id"] = lookup.get("x-cortex-request-id")
    call["body_b64"] = base64.b64encode(body).decode()
    content_type = lookup.get("content-type")
    behaviour = lookup.get("x-behaviour", "")
    echo = {"body": body.decode("utf-8", "replace"), "content_type": content_type}
    if call["id"] is not None:
        SEEN[call["id"]] = SEEN.get(call["id"], 0) + 1
    if behaviour.startswith("sleep:"):
        gone = asyncio.ensure_future(disconnected(receive))
        done, _ = await asyncio.wait({gone}, timeout=float(behaviour.partition(":")[2]))
        if done:
            call["disconnected"] = call["finished"] = time.time()
            return
        gone.cancel()
    if behaviour.startswith("flaky:"):
        _, code, times = behaviour.split(":")
        if SEEN.get(call["id"] or "", 0) <= int(times):
            behaviour = f"status:{code}"
    call["finished"] = time.time()
    if behaviour == "exit":
        os._exit(3)
    elif behaviour.startswith("status:"):
        status = int(behaviour.partition(":")[2])
        await respond(send, status, b'{"error": "boom"}', "application/json")
    elif behaviour == "text":
        await respond(send, 200, b"hello", "text/plain")
    elif behaviour == "invalid-json":
        await respond(send, 200, b"{not json", "application/json")
    elif behaviour == "png":
        await respond(send, 200, body, "image/png")
    elif behaviour == "untyped":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    elif behaviour == "charset":
        await respond(send, 200, json.dumps(echo).encode(), "application/json; charset=utf-8")
    else:
        await respond(send, 200, json.dumps(echo).encode(), "application/json")


async def disconnected(receive: Receive) -> None:
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
