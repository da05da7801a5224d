"""The call to the user's container: ``POST http://127.0.0.1:<port>/``, Cortex's rules.

This is the hot path, so it uses aiohttp (one pooled session per process): measured against a
local echo server it costs a fraction of httpx's CPU per request (docs/dequeuer.md). The body
streams from the store to the socket; only the answer is held in memory, up to a limit.

A call succeeds when the container answers ``200`` with ``Content-Type: application/json``
(parameters such as ``; charset=utf-8`` allowed) and a body that parses as JSON. Anything else
yields an :class:`~chute.protocol.ErrorInfo` whose ``type`` says why. An API with
``results.content_type: any`` also takes a ``200`` of any other type: its bytes are the result,
stored with that type (a JSON type must still parse).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Self

import aiohttp
import msgspec
from multidict import CIMultiDict

from chute.closing import AsyncClosing
from chute.errors import BackendUnavailable, NotFound
from chute.protocol import HOP_BY_HOP_HEADERS, REQUEST_ID_HEADER, ErrorInfo, RequestRecord

#: How much of a failed answer's body is kept with the error.
ERROR_BODY_LIMIT = 1024
_CHUNK = 64 * 1024
# Never forwarded: hop-by-hop headers, our own request id header (set by us, never by the
# client), and Accept-Encoding, which was about the gateway's answer to the client; the
# session asks for encodings it can decode itself.
_DROPPED = HOP_BY_HOP_HEADERS | {REQUEST_ID_HEADER.lower(), "accept-encoding"}


class CallResult(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one call: ``result`` (JSON bytes) on success, else ``error``."""

    result: bytes | None = None
    #: The result's Content-Type when it is not JSON (``results.content_type: any``).
    content_type: str | None = None
    error: ErrorInfo | None = None
    status_code: int | None = None  # None when the container never answered
    seconds: float = 0.0


class PayloadUnavailable(BackendUnavailable):
    """The store failed while the payload streamed: an outage, not the request's fault, so the
    call is retried like any other backend call."""


def forwarded_headers(record: RequestRecord, length: int | None) -> CIMultiDict[str]:
    """The headers sent to the container: the stored ones (minus hop-by-hop), the original
    ``Content-Type``, ``Content-Length`` (when known) and ``X-Cortex-Request-ID``."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in record.headers:
        if name.lower() not in _DROPPED:
            headers.add(name, value)
    if record.content_type is not None:
        headers["Content-Type"] = record.content_type
    if length is not None:
        # A known length spares the container chunked decoding (some servers refuse it).
        headers["Content-Length"] = str(length)
    headers[REQUEST_ID_HEADER] = record.id
    return headers


def is_json_media_type(content_type: str) -> bool:
    """``application/json``, with or without parameters, in any letter case."""
    return content_type.partition(";")[0].strip().lower() == "application/json"


class ContainerClient(AsyncClosing):
    """POSTs requests to the user container over one pooled aiohttp session."""

    def __init__(
        self,
        port: int,
        *,
        max_connections: int,
        connect_timeout: float = 5.0,
        max_result_size: int = 100 * 1024 * 1024,
        any_content_type: bool = False,
    ) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.any_content_type = any_content_type
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.max_result_size = max_result_size
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            # No total or read timeout: a job runs as long as it needs (the lease heartbeat
            # keeps it ours); only an unreachable container fails fast.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry cookies between requests
            # Forward only what the client sent: no made-up User-Agent or Content-Type.
            skip_auto_headers=("User-Agent", "Content-Type"),
        )
        return self

    async def aclose(self) -> None:
        """Close the HTTP session (``async with`` does it at the end)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, record: RequestRecord, payload: bytes | AsyncIterator[bytes]
    ) -> CallResult:
        """POST the request to the container and judge its answer. ``payload`` is the body in
        memory (as a joint receive read it along) or streamed from the store.

        Raises NotFound when the store has no payload (before anything is sent) and
        PayloadUnavailable when the store fails while the body streams.
        """
        assert self._session is not None, "use ContainerClient as an async context manager"
        if isinstance(payload, bytes):
            # In memory already: aiohttp sends it with the headers, with no stream to drive.
            return await self._post(record, payload, len(payload), None)
        try:
            return await self._call(record, payload)
        finally:
            # The store's reader (a file, a streaming HTTP response) is released here even
            # when the body was never sent, e.g. the container refused the connection.
            aclose = getattr(payload, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _call(self, record: RequestRecord, payload: AsyncIterator[bytes]) -> CallResult:
        assert self._session is not None
        # Read the first chunk before connecting: a missing payload fails here, cleanly.
        body: _Body | None = None
        try:
            first = await anext(payload)
        except StopAsyncIteration:
            data: bytes | AsyncIterator[bytes] = b""
            length: int | None = 0
        else:
            # The stored size gives Content-Length; without one the body goes chunked.
            body = _Body(first, payload)
            data = body.stream()
            length = record.payload_size or None
        return await self._post(record, data, length, body)

    async def _post(
        self,
        record: RequestRecord,
        data: bytes | AsyncIterator[bytes],
        length: int | None,
        body: _Body | None,
    ) -> CallResult:
        assert self._session is not None
        started = time.perf_counter()
        try:
            async with self._session.post(
                self.url,
                data=data,
                headers=forwarded_headers(record, length),
                allow_redirects=False,
            ) as response:
                return await self._judge(response, started)
        except aiohttp.ClientError as exc:
            if body is not None and body.error is not None:
                raise PayloadUnavailable(str(body.error)) from body.error
            return CallResult(
                error=ErrorInfo(
                    type="connection",
                    message=f"user container not reachable at {self.url}: {_describe(exc)}",
                ),
                seconds=time.perf_counter() - started,
            )

    async def _judge(self, response: aiohttp.ClientResponse, started: float) -> CallResult:
        status = response.status
        content_type = response.headers.get("Content-Type", "")
        problem: tuple[str, str] | None = None
        if status != 200:
            problem = ("container_status", f"got status code {status}, expected 200")
        elif not is_json_media_type(content_type) and not self.any_content_type:
            problem = (
                "content_type",
                f"got Content-Type {content_type or 'none'!r}, expected application/json",
            )
        if problem is not None:
            head = await response.content.read(ERROR_BODY_LIMIT)
            return _failed(problem, status, head, started)
        body = await _read_limited(response, self.max_result_size)
        seconds = time.perf_counter() - started
        if body is None:
            message = f"response body is larger than the limit of {self.max_result_size} bytes"
            return _failed(("result_too_large", message), status, b"", started)
        if not is_json_media_type(content_type):
            # Bytes of their own type: stored as they came (no type: as HTTP says, octets).
            kind = content_type or "application/octet-stream"
            return CallResult(result=body, content_type=kind, status_code=status, seconds=seconds)
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return _failed(
                ("invalid_json", f"response body is not JSON: {exc}"), status, body, started
            )
        return CallResult(result=body, status_code=status, seconds=seconds)


class _Body:
    """The payload as a request body; remembers a store error so it is not blamed on the
    container."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self.first = first
        self.rest = rest
        self.error: BaseException | None = None

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            if self.first:
                yield self.first
            async for chunk in self.rest:
                yield chunk
        except (BackendUnavailable, NotFound) as exc:
            self.error = exc
            raise
        finally:
            # The container may answer before reading everything: free the store's reader now.
            aclose = getattr(self.rest, "aclose", None)
            if aclose is not None:
                await aclose()


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _failed(problem: tuple[str, str], status: int, body: bytes, started: float) -> CallResult:
    kind, message = problem
    text = body[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace") if body else None
    return CallResult(
        error=ErrorInfo(type=kind, message=message, status_code=status, body=text),
        status_code=status,
        seconds=time.perf_counter() - started,
    )


def _describe(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the connection closed before an answer came"
    return str(exc) or type(exc).__name__
