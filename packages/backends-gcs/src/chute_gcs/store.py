"""Request records, payloads and results as Cloud Storage objects, with compare-and-set done
by generation preconditions.

Objects of one request, under ``<prefix>/<api>/<id>/``:

* ``record.json``  the record (msgspec JSON); its generation is the version ``write_if`` checks;
* ``payload``      the request body, with its Content-Type; multipart upload up to
  ``chunk_size``, a resumable upload in ``chunk_size`` chunks above it; streamed back;
* ``result.json``  the container's JSON answer, written before the record turns ``completed``.

Every write carries ``ifGenerationMatch`` (0 = create only), and every compare-and-set is a
multipart upload, never a simple media upload (which emulators do not check). Custom metadata
``chute-token`` marks the call that wrote an object, so a retried write that answers 412 can tell
its own success from a lost race; ``chute-base`` on the result names the record generation the
writer read, which decides who may replace a result left by a writer that lost (see docs/gcs.md).
Retention is a bucket lifecycle rule (:meth:`GcsStore.initialize`) plus the expiry check on
every read.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
import anyio
import msgspec

from chute.backends.base import DEFAULT_RETENTION, Store
from chute.backends.streams import limited_pieces
from chute.errors import BackendError, ConfigError, Conflict, NotFound
from chute.protocol import (
    RequestRecord,
    Status,
    now,
    record_decoder,
    record_encoder,
    validate_api_name,
    validate_request_id,
)
from chute_gcs.client import GcsClient, PreconditionFailed, io_error
from chute_gcs.retention import merge_rules, retention_days
from chute_gcs.settings import parse_url

RECORD = "record.json"
PAYLOAD = "payload"
RESULT = "result.json"
#: Bytes per piece handed to the dequeuer while a payload streams back.
READ_PIECE = 1024 * 1024
#: Custom metadata keys (``x-goog-meta-…``).
TOKEN = "chute-token"
BASE = "chute-base"
#: Tries to place a result when writers left results behind (each try is a few requests).
RESULT_TRIES = 8


class GcsStore(Store):
    """chute's :class:`~chute.backends.base.Store` on a Cloud Storage bucket (``gs://``)."""

    #: Expired objects are deleted by the bucket's lifecycle rule, on GCS's schedule.
    purge_removes_expired = False

    #: No listing (the dashboard says the backend cannot list): a bucket lists keys only in
    #: ascending order and knows nothing of a record's status, so "the newest failed requests"
    #: would read every record object of the API. See docs/dashboard.md.
    supports_listing = False

    def __init__(self, url: str) -> None:
        self.settings = parse_url(url)
        self.max_payload_size = self.settings.max_payload_size
        self._client = GcsClient(self.settings)

    def __repr__(self) -> str:
        return f"GcsStore({self.settings.address!r})"

    def _name(self, api: str, request_id: str, leaf: str) -> str:
        validate_request_id(request_id)
        return f"{self.settings.prefix}/{validate_api_name(api)}/{request_id}/{leaf}"

    # -- create ----------------------------------------------------------------------------

    async def create(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        record_name = self._name(record.api, record.id, RECORD)
        payload_name = self._name(record.api, record.id, PAYLOAD)
        doing = f"creating request {record.id} of {record.api}"
        exists = Conflict(f"request {record.id} of API {record.api} already exists")
        client = self._client
        token = secrets.token_hex(8)
        metadata = {TOKEN: token}
        content_type = record.content_type or "application/octet-stream"
        session: str | None = None
        payload_generation: int | None = None
        resource: dict[str, Any] | None = None
        try:
            pieces = limited_pieces(
                body, limit=self.max_payload_size, piece_size=self.settings.chunk_size
            )
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if not piece.last:
                        # Large payload: a resumable upload, one chunk in memory at a time.
                        if session is None:
                            # Emulators do not check preconditions on resumable uploads (GCS
                            # does): refuse a known id before sending a byte.
                            if await client.read(record_name, doing=doing) is not None:
                                raise exists
                            session = await client.start_upload(
                                payload_name,
                                if_generation_match=0,
                                metadata=metadata,
                                content_type=content_type,
                                doing=doing,
                            )
                        await client.put_chunk(
                            session, piece.data, offset=piece.offset, total=None, doing=doing
                        )
                        continue
                    size = piece.end
                    try:
                        if session is None:  # it fits in one piece: one multipart upload
                            resource = await client.insert(
                                payload_name,
                                piece.data,
                                if_generation_match=0,
                                metadata=metadata,
                                content_type=content_type,
                                doing=doing,
                            )
                        else:
                            committed = await client.put_chunk(
                                session, piece.data, offset=piece.offset, total=size, doing=doing
                            )
                            session = None
                            assert committed is not None
                            resource = committed
                    except PreconditionFailed as failed:
                        session = None
                        if not (failed.retried and await self._owned(payload_name, token, doing)):
                            raise exists from None
                        resource = await self._info(payload_name, doing)
            assert resource is not None  # limited_pieces always ends with a last piece
            payload_generation = int(resource["generation"])
            stored = msgspec.structs.replace(record, payload_size=size)
            try:
                await client.insert(
                    record_name,
                    record_encoder.encode(stored),
                    if_generation_match=0,
                    metadata=metadata,
                    content_type="application/json",
                    doing=doing,
                )
            except PreconditionFailed as failed:
                if not (failed.retried and await self._owned(record_name, token, doing)):
                    raise exists from None
        except BaseException:
            with anyio.CancelScope(shield=True):  # clean up even when cancelled
                if session is not None:
                    await client.cancel_upload(session)
                if payload_generation is not None:
                    await self._discard(payload_name, payload_generation)
            raise
        return stored

    async def _discard(self, name: str, generation: int) -> None:
        # Only the generation we wrote: never another creator's object. Best effort, since the
        # lifecycle rule removes what is left.
        with anyio.move_on_after(self.settings.timeout):
            with contextlib.suppress(BackendError, PreconditionFailed):
                await self._client.delete(
                    name, doing="removing a half-created request", if_generation_match=generation
                )

    async def _info(self, name: str, doing: str) -> dict[str, Any]:
        info = await self._client.info(name, doing=doing)
        if info is None:
            raise BackendError(f"GCS object {name} vanished while it was written ({doing})")
        return info

    async def _owned(self, name: str, token: str, doing: str) -> bool:
        """Whether the object holds the write tagged ``token`` (our own, whose answer was lost)."""
        info = await self._client.info(name, doing=doing)
        return info is not None and (info.get("metadata") or {}).get(TOKEN) == token

    # -- read ------------------------------------------------------------------------------

    async def read(self, api: str, request_id: str) -> tuple[RequestRecord, object] | None:
        name = self._name(api, request_id, RECORD)
        reply = await self._client.read(name, doing=f"reading request {request_id} of {api}")
        if reply is None:
            return None
        generation = reply.headers.get("X-Goog-Generation")
        if generation is None:
            raise BackendError(f"GCS answered no generation for {name}")
        return record_decoder.decode(reply.body), int(generation)

    async def _live(self, api: str, request_id: str) -> RequestRecord | None:
        found = await self.read(api, request_id)
        if found is None or found[0].expires_at <= now():
            return None
        return found[0]

    async def payload(self, api: str, request_id: str) -> AsyncIterator[bytes]:
        name = self._name(api, request_id, PAYLOAD)
        doing = f"reading the payload of request {request_id} of {api}"
        if await self._live(api, request_id) is None:
            raise NotFound(f"no payload for request {request_id} of API {api} (or it expired)")
        async with self._client.download(name, doing=doing) as response:
            if response.status == 404:
                raise NotFound(f"request {request_id} of API {api} has no payload")
            try:
                async for piece in response.content.iter_chunked(READ_PIECE):
                    yield piece
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise io_error(exc, self.settings, doing) from exc

    async def result(self, api: str, request_id: str) -> bytes | None:
        # Only a live, completed record's result: a result left by a writer that lost its
        # compare-and-set is never shown.
        record = await self._live(api, request_id)
        if record is None or record.status is not Status.COMPLETED:
            return None
        name = self._name(api, request_id, RESULT)
        reply = await self._client.read(name, doing=f"reading the result of {request_id} of {api}")
        return None if reply is None else reply.body

    # -- write -----------------------------------------------------------------------------

    async def write_if(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> bool:
        name = self._name(record.api, record.id, RECORD)
        if not isinstance(version, int) or isinstance(version, bool):
            return False  # not a version this store handed out
        doing = f"updating request {record.id} of {record.api}"
        token = secrets.token_hex(8)
        if result is not None and not await self._place_result(record, version, result, token):
            return False
        try:
            await self._client.insert(
                name,
                record_encoder.encode(record),
                if_generation_match=version,
                metadata={TOKEN: token},
                content_type="application/json",
                doing=doing,
            )
        except PreconditionFailed as failed:
            return failed.retried and await self._owned(name, token, doing)
        return True

    async def _place_result(
        self, record: RequestRecord, base: int, result: bytes, token: str
    ) -> bool:
        """Write ``result.json`` for a compare-and-set of the record at generation ``base``.

        The result is written first and the record second, so a reader of a completed record
        always finds its result. A writer that loses the record's compare-and-set leaves its
        result behind; the next writer may replace it only while the record is still at its own
        ``base``, and never a result whose writer read the same ``base`` (that one may still win).
        So once a record is completed nobody replaces its result. False: the record moved on.
        """
        name = self._name(record.api, record.id, RESULT)
        doing = f"storing the result of request {record.id} of {record.api}"
        metadata = {TOKEN: token, BASE: str(base)}
        client = self._client
        expected = 0
        for _ in range(RESULT_TRIES):
            try:
                await client.insert(
                    name,
                    result,
                    if_generation_match=expected,
                    metadata=metadata,
                    content_type="application/json",
                    doing=doing,
                )
                return True
            except PreconditionFailed as failed:
                if failed.retried and await self._owned(name, token, doing):
                    return True
            info = await client.info(name, doing=doing)
            if info is None:
                expected = 0  # deleted meanwhile: create it
                continue
            found = info.get("metadata") or {}
            if found.get(TOKEN) == token:
                return True
            if found.get(BASE) == str(base):
                return False  # a rival that read the same record is ahead of us
            current = await self.read(record.api, record.id)
            if current is None or current[1] != base:
                return False  # the record moved on: our compare-and-set would fail anyway
            expected = int(info["generation"])  # a loser's leftover: replace exactly it
        return False

    async def delete(self, api: str, request_id: str) -> bool:
        names = [self._name(api, request_id, leaf) for leaf in (RECORD, PAYLOAD, RESULT)]
        doing = f"deleting request {request_id} of {api}"
        # The record first: once it is gone, no reader looks for the rest.
        deleted = [await self._client.delete(names[0], doing=doing)]

        async def remove(name: str) -> None:
            deleted.append(await self._client.delete(name, doing=doing))

        async with anyio.create_task_group() as tg:
            for name in names[1:]:
                tg.start_soon(remove, name)
        return any(deleted)

    # -- bucket ----------------------------------------------------------------------------

    async def initialize(self, *, retention: float = DEFAULT_RETENTION) -> list[str]:
        """Create the bucket if it is missing and ``?project=`` names where, then install the
        lifecycle rule deleting chute's objects ``retention`` (in whole days) after they were
        written, kept beside the bucket's other rules. Idempotent."""
        client = self._client
        settings = self.settings
        doing = "preparing the bucket"
        days = retention_days(retention)
        where = f"gs://{settings.bucket}"
        lines: list[str] = []
        for _ in range(8):
            bucket = await client.bucket(doing=doing)
            if bucket is None:
                if settings.project is None:
                    raise ConfigError(
                        f"bucket {settings.bucket!r} does not exist: create it, or add "
                        "?project=<project id> to the store URL so that chute creates it"
                    )
                if await client.create_bucket(settings.project, doing=doing):
                    lines.append(f"{where}: created in project {settings.project}")
                continue
            existing = list((bucket.get("lifecycle") or {}).get("rule") or [])
            rules, changed = merge_rules(existing, settings.prefix, days)
            rule = f"delete objects under {settings.prefix}/ {days} days after they are written"
            if not changed:
                lines.append(f"{where}: lifecycle rule in place ({rule})")
                return lines
            try:
                await client.patch_bucket(
                    {"lifecycle": {"rule": rules}},
                    if_metageneration_match=int(bucket.get("metageneration", 0)),
                    doing=doing,
                )
            except PreconditionFailed:
                continue  # someone else changed the bucket meanwhile: merge again
            kept = len(rules) - 1
            lines.append(f"{where}: lifecycle rule installed ({rule}; {kept} other rule(s) kept)")
            return lines
        raise BackendError(f"{where}: the bucket kept changing while chute edited its rules")

    async def ping(self) -> None:
        if await self._client.bucket(doing="ping") is None:
            raise BackendError(
                f"GCS bucket {self.settings.bucket!r} does not exist ({self.settings.address})"
            )

    async def aclose(self) -> None:
        await self._client.aclose()
