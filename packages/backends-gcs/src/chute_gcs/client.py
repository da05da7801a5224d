"""The Cloud Storage JSON API calls chute makes, on one aiohttp session per process.

One session (one connection pool) and one credentials object serve every store opened on the
same endpoint in a process, so no request pays for a TLS handshake or a token fetch. aiohttp
sessions belong to the event loop that opened them, so the cache is kept per running loop (a
production process has one loop; a test suite has several).

Every request is bounded by the URL's ``timeout``; 408, 429, 5xx and network errors are retried
with exponential backoff and jitter, at most ``retries`` times, then raise BackendUnavailable.
Writes are safe to retry because every one carries a generation precondition; a retried write
that answers 412 may have succeeded the first time, which :class:`PreconditionFailed` says so the
store can check whether the object now holds its own write.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import anyio
import msgspec
from multidict import CIMultiDictProxy

from chute.backends.pool import LoopHandle
from chute.backoff import Backoff
from chute.errors import BackendError, BackendUnavailable, ChuteError, CredentialsRefused
from chute_gcs import session
from chute_gcs.settings import GcsSettings

#: OAuth scope for the JSON API; full control because `chute storage init` edits the bucket's
#: lifecycle configuration.
SCOPES: Final = ["https://www.googleapis.com/auth/devstorage.full_control"]
#: Answers worth another try: the request was not applied, or Google asks us to slow down.
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_CAP = 2.0
BACKOFF = Backoff(first=0.1, cap=BACKOFF_CAP, jitter="half")

_decoder = msgspec.json.Decoder(dict[str, Any])


class PreconditionFailed(Exception):
    """A write's ``ifGenerationMatch`` (or ``ifMetagenerationMatch``) did not hold (412).

    Internal to chute_gcs: the store turns it into ``False``, Conflict or a retry. ``retried``
    is True when an earlier try of the same request may have been applied (its answer was lost),
    so the 412 may be our own write.
    """

    def __init__(self, retried: bool) -> None:
        super().__init__("precondition failed")
        self.retried = retried


@dataclass(frozen=True)
class Reply:
    """A finished response: its status, headers and whole body (small bodies only)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> dict[str, Any]:
        return _decoder.decode(self.body) if self.body else {}


# --- the shared session ----------------------------------------------------------------------


_sessions = session.registry()


class GcsClient:
    """The JSON API for one bucket, on the process's shared session for its endpoint."""

    def __init__(self, settings: GcsSettings) -> None:
        self.settings = settings
        base = settings.endpoint
        self._objects = f"{base}/storage/v1/b/{quote(settings.bucket, safe='')}/o"
        self._uploads = f"{base}/upload/storage/v1/b/{quote(settings.bucket, safe='')}/o"
        self._bucket = f"{base}/storage/v1/b/{quote(settings.bucket, safe='')}"
        self._handle = LoopHandle(
            _sessions,
            settings.session_key,
            session.close,
            closed_message="this GCS store is closed",
        )

    # -- session and credentials ---------------------------------------------------------

    def _shared(self) -> session.Shared:
        # Payloads come back as stored: no transparent decompression.
        return self._handle.get_now(lambda: session.new_shared(auto_decompress=False))

    async def aclose(self) -> None:
        """Give the session back; close it if nobody else in this loop uses it."""
        await self._handle.aclose()

    async def _auth(self, shared: session.Shared, doing: str) -> dict[str, str]:
        return await session.authorization(
            shared, emulator=self.settings.emulator, scopes=SCOPES, service="GCS", doing=doing
        )

    # -- requests ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        *,
        doing: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        expect: frozenset[int] = frozenset({200}),
        retry: bool = True,
        stream: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request, retrying what is worth retrying, and yield the response whose
        status is in ``expect`` (its body unread). 412 raises PreconditionFailed unless
        expected; anything else raises chute's errors."""
        shared = self._shared()
        settings = self.settings
        timeout = (
            aiohttp.ClientTimeout(sock_connect=settings.timeout, sock_read=settings.timeout)
            if stream
            else aiohttp.ClientTimeout(total=settings.timeout)
        )
        attempts = 1 + (settings.retries if retry else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            sent = dict(await self._auth(shared, doing))
            sent.update(headers or {})
            try:
                response = await shared.session.request(
                    method, url, params=params, headers=sent, data=data, timeout=timeout
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if last:
                    raise BackendUnavailable(
                        f"GCS at {settings.address} is unreachable ({doing}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                await _backoff(attempt)
                continue
            if response.status in expect:
                try:
                    yield response
                finally:
                    response.release()
                return
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError):
                body = b""
            finally:
                response.release()
            if response.status == 412:
                raise PreconditionFailed(retried=attempt > 0)
            if response.status in RETRY_STATUSES and not last:
                await _backoff(attempt, response.headers.get("Retry-After"))
                continue
            raise status_error(response.status, body, settings, doing)
        raise AssertionError("unreachable")  # pragma: no cover

    async def call(
        self,
        method: str,
        url: str,
        *,
        doing: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        expect: frozenset[int] = frozenset({200}),
        retry: bool = True,
    ) -> Reply:
        """:meth:`open`, with the whole (small) body read."""
        async with self.open(
            method,
            url,
            doing=doing,
            params=params,
            headers=headers,
            data=data,
            expect=expect,
            retry=retry,
        ) as response:
            try:
                body = await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise io_error(exc, self.settings, doing) from exc
            return Reply(response.status, response.headers, body)

    # -- objects -------------------------------------------------------------------------

    def object_url(self, name: str) -> str:
        return f"{self._objects}/{quote(name, safe='')}"

    async def read(self, name: str, *, doing: str) -> Reply | None:
        """The object's bytes and headers (``X-Goog-Generation``, ``X-Goog-Meta-*``), or None."""
        reply = await self.call(
            "GET",
            self.object_url(name),
            doing=doing,
            params={"alt": "media"},
            expect=frozenset({200, 404}),
        )
        return None if reply.status == 404 else reply

    @contextlib.asynccontextmanager
    async def download(self, name: str, *, doing: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streaming GET of the object's bytes; the response's status is 200 or 404."""
        async with self.open(
            "GET",
            self.object_url(name),
            doing=doing,
            params={"alt": "media"},
            expect=frozenset({200, 404}),
            stream=True,
        ) as response:
            yield response

    async def info(self, name: str, *, doing: str) -> dict[str, Any] | None:
        """The object's resource (``generation``, ``metadata``, ``size``, …), or None."""
        reply = await self.call(
            "GET", self.object_url(name), doing=doing, expect=frozenset({200, 404})
        )
        return None if reply.status == 404 else reply.json()

    async def insert(
        self,
        name: str,
        data: bytes,
        *,
        if_generation_match: int,
        metadata: Mapping[str, str],
        content_type: str,
        doing: str,
    ) -> dict[str, Any]:
        """Write the object in one multipart upload if its generation is still
        ``if_generation_match`` (0: only if it does not exist). Returns the new resource.

        Multipart, never a simple media upload: emulators such as fake-gcs-server check
        preconditions on multipart uploads but ignore them on media uploads."""
        boundary = secrets.token_hex(16)
        resource = msgspec.json.encode(
            {"name": name, "contentType": content_type, "metadata": dict(metadata)}
        )
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                resource,
                f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        reply = await self.call(
            "POST",
            self._uploads,
            doing=doing,
            params={"uploadType": "multipart", "ifGenerationMatch": str(if_generation_match)},
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
            data=body,
        )
        return reply.json()

    async def start_upload(
        self,
        name: str,
        *,
        if_generation_match: int,
        metadata: Mapping[str, str],
        content_type: str,
        doing: str,
    ) -> str:
        """Open a resumable upload session; returns its URL."""
        reply = await self.call(
            "POST",
            self._uploads,
            doing=doing,
            params={"uploadType": "resumable", "ifGenerationMatch": str(if_generation_match)},
            headers={"Content-Type": "application/json; charset=UTF-8"},
            data=msgspec.json.encode(
                {"name": name, "contentType": content_type, "metadata": dict(metadata)}
            ),
        )
        location = reply.headers.get("Location")
        if not location:
            raise BackendError(f"GCS at {self.settings.address} opened no upload session")
        return location

    async def put_chunk(
        self, session_url: str, data: bytes, *, offset: int, total: int | None, doing: str
    ) -> dict[str, Any] | None:
        """Send bytes ``offset…`` of a resumable upload; ``total`` on the last chunk commits
        the object (returns its resource). Resends what the server did not persist.

        Not retried after an error: resuming needs a status query, and the gateway keeps no
        copy of the body to replay, so a failed chunk fails the submit (503, the client
        resubmits)."""
        sent = 0
        while True:
            piece = data if sent == 0 else data[sent:]  # a copy only to resend a remainder
            start = offset + sent
            if not piece:
                content_range = f"bytes */{total}"
            else:
                end = start + len(piece) - 1
                content_range = f"bytes {start}-{end}/{'*' if total is None else total}"
            reply = await self.call(
                "PUT",
                session_url,
                doing=doing,
                headers={"Content-Range": content_range},
                data=piece,
                expect=frozenset({200, 201, 308}),
                retry=False,
            )
            if reply.status in (200, 201):
                return reply.json()
            if total is not None and start + len(piece) >= total:
                raise BackendError(f"GCS did not commit the upload ({doing})")
            persisted = _persisted(reply.headers.get("Range"))
            if persisted >= offset + len(data):
                return None
            if persisted < start:
                raise BackendUnavailable(
                    f"GCS lost part of an upload ({doing}): it holds {persisted} bytes, "
                    f"{start} were sent before this chunk"
                )
            sent = persisted - offset

    async def cancel_upload(self, session_url: str) -> None:
        """Abandon a resumable upload session (best effort: sessions expire by themselves)."""
        with anyio.move_on_after(self.settings.timeout, shield=True):
            with contextlib.suppress(ChuteError, PreconditionFailed):
                await self.call(
                    "DELETE",
                    session_url,
                    doing="cancelling an upload",
                    expect=frozenset({200, 204, 404, 410, 499}),
                    retry=False,
                )

    async def delete(
        self, name: str, *, doing: str, if_generation_match: int | None = None
    ) -> bool:
        """Delete the object (only that generation, if given); False if it was not there."""
        params = (
            {} if if_generation_match is None else {"ifGenerationMatch": str(if_generation_match)}
        )
        reply = await self.call(
            "DELETE",
            self.object_url(name),
            doing=doing,
            params=params,
            expect=frozenset({200, 204, 404}),
        )
        return reply.status != 404

    # -- the bucket ----------------------------------------------------------------------

    async def bucket(self, *, doing: str) -> dict[str, Any] | None:
        """The bucket's resource (``metageneration``, ``lifecycle``, …), or None."""
        reply = await self.call("GET", self._bucket, doing=doing, expect=frozenset({200, 404}))
        return None if reply.status == 404 else reply.json()

    async def create_bucket(self, project: str, *, doing: str) -> bool:
        """Create the bucket in ``project``; False if it exists already."""
        reply = await self.call(
            "POST",
            f"{self.settings.endpoint}/storage/v1/b",
            doing=doing,
            params={"project": project},
            headers={"Content-Type": "application/json; charset=UTF-8"},
            data=msgspec.json.encode({"name": self.settings.bucket}),
            expect=frozenset({200, 409}),
        )
        return reply.status == 200

    async def patch_bucket(
        self, changes: Mapping[str, Any], *, if_metageneration_match: int, doing: str
    ) -> dict[str, Any]:
        """Change the bucket's configuration if nobody changed it since we read it."""
        reply = await self.call(
            "PATCH",
            self._bucket,
            doing=doing,
            params={"ifMetagenerationMatch": str(if_metageneration_match)},
            headers={"Content-Type": "application/json; charset=UTF-8"},
            data=msgspec.json.encode(dict(changes)),
        )
        return reply.json()


def _persisted(range_header: str | None) -> int:
    """Bytes a resumable session holds, from its ``Range: bytes=0-N`` answer."""
    if not range_header or "-" not in range_header:
        return 0
    return int(range_header.rsplit("-", 1)[1]) + 1


async def _backoff(attempt: int, retry_after: str | None = None) -> None:
    """Sleep after failed try ``attempt`` (0-based); at least ``Retry-After``, when given."""
    delay = BACKOFF.delay(attempt + 1)
    if retry_after is not None and retry_after.isdigit():
        delay = max(delay, min(float(retry_after), BACKOFF_CAP))
    await anyio.sleep(delay)


def status_error(status: int, body: bytes, settings: GcsSettings, doing: str) -> ChuteError:
    """chute's error for a GCS error answer (after retries)."""
    message = _error_message(body)
    where = f"GCS at {settings.address}"
    if status in RETRY_STATUSES:
        return BackendUnavailable(f"{where} kept answering {status} ({doing}): {message}")
    if status in (401, 403):
        return CredentialsRefused(f"{where} refused our credentials ({doing}): {status} {message}")
    if status == 404:
        return BackendError(
            f"{where}: bucket {settings.bucket!r} not found ({doing}); create it, or run "
            "`chute storage init` with ?project=… in the URL"
        )
    return BackendError(f"{where} rejected {doing}: {status} {message}")


def io_error(exc: BaseException, settings: GcsSettings, doing: str) -> BackendUnavailable:
    """chute's error for a connection that broke while a body was read."""
    return BackendUnavailable(
        f"GCS at {settings.address}: the connection broke ({doing}): {type(exc).__name__}: {exc}"
    )


def _error_message(body: bytes) -> str:
    try:
        decoded = _decoder.decode(body)
        return str(decoded.get("error", {}).get("message", "")) or body[:200].decode(
            errors="replace"
        )
    except (msgspec.DecodeError, AttributeError):
        return body[:200].decode(errors="replace").strip()
