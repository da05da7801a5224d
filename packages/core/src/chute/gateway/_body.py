"""ASGI body plumbing: the ASGI types, a ``receive`` that knows when the body ended, a
request body streamed to the store within its limits (size, pauses, total time), and an
answer sent before the body was read (then the rest is drained)."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc

from chute.errors import PayloadTooLarge
from chute.gateway._responses import error

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
#: Seconds to read and drop the rest of a body answered early, and to keep emptying the
#: server's queue while the connection closes after that (see ``_finish_early``).
DRAIN_TIME = 5.0
DRAIN_GRACE = 1.0
#: ``RequestRecord.extra`` key of an idempotent submit: its body's SHA-256.
EXTRA_BODY_SHA256 = "body_sha256"


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
