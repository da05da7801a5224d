"""hello-world: a Cortex-style Async API container, written as a plain ASGI app.

It speaks the container side of the protocol and nothing else:

* ``GET /healthz`` answers 200 once the container is ready (the readiness probe in api.yaml);
* ``POST /`` receives the request's body exactly as the client sent it, plus the
  ``X-Cortex-Request-ID`` header, and answers 200 with a JSON body: that body is the result.

Serve it with any ASGI server; its port comes from ``CORTEX_PORT`` (api.yaml's ``pod.port``)::

    python -m hypercorn app:app --bind 127.0.0.1:$CORTEX_PORT

A JSON body may carry a few knobs, so that the example can also show slow and failing
requests: ``{"sleep": 2}`` waits two seconds before answering, ``{"wait_for": "/tmp/go"}``
waits until that file exists (a request that runs until you say so), and ``{"fail": true}``
answers 500, which fails the request with the reason stored. If ``HELLO_READY_FILE`` is set,
``/healthz`` answers 503 until that file exists (a stand-in for loading a model), and the
dequeuer holds every request back until then.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOSTNAME = socket.gethostname()
READY_FILE = os.environ.get("HELLO_READY_FILE")
#: Numbers this process's calls, so a result shows which call produced it.
_calls = itertools.count(1)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    if path == "/healthz" and method == "GET":
        if not _is_ready():
            await _answer(send, 503, {"ready": False, "waiting_for": READY_FILE})
        else:
            await _answer(send, 200, {"ready": True})
    elif path == "/" and method == "POST":
        await _predict(scope, receive, send)
    else:
        await _answer(send, 404, {"error": f"no route for {method} {path}"})


def _is_ready() -> bool:
    # A stat of a local file: too quick to be worth a thread.
    return READY_FILE is None or os.path.exists(READY_FILE)


async def _predict(scope: Scope, receive: Receive, send: Send) -> None:
    body = await _read_body(receive)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    request_id = headers.get("x-cortex-request-id")
    call = next(_calls)
    # One line per call on stdout: `chute dev` shows it as `hello-world/api | …`.
    print(f"hello-world: call {call}: request {request_id} ({len(body)} bytes)", flush=True)

    payload: Any
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = body.decode("utf-8", "replace")
    knobs = payload if isinstance(payload, dict) else {}
    if knobs.get("sleep"):
        await asyncio.sleep(float(knobs["sleep"]))
    if knobs.get("wait_for"):
        await _wait_for_file(str(knobs["wait_for"]))
    if knobs.get("fail"):
        await _answer(send, 500, {"error": "failing on purpose: the request asked for it"})
        return
    text = knobs.get("text", "world")
    await _answer(
        send,
        200,
        {
            "message": f"hello, {text}!",
            "echo": payload,
            "content_type": headers.get("content-type"),
            "request_id": request_id,
            "hostname": HOSTNAME,
            "pid": os.getpid(),
            "call": call,
        },
    )


async def _wait_for_file(path: str) -> None:
    # A file gives no event to wait on: look every 20 ms (a stat costs microseconds).
    while not _exists(path):  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            port = os.environ.get("CORTEX_PORT", "?")
            print(f"hello-world: ready on port {port} (pid {os.getpid()})", file=sys.stderr)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
