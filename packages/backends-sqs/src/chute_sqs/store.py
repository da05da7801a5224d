"""chute's store on Amazon S3: records moved by conditional writes, payloads streamed.

Objects of one request, under ``<prefix>/<api>/<id>/``:

* ``record.json``: the record (msgspec JSON, headers included), a revision counter and the
  name of the result object. Created with ``If-None-Match: *`` and replaced only with
  ``If-Match: <ETag>`` of the version the writer read: a real compare-and-set, so a status
  never goes backwards and exactly one of several racing writers wins. The revision makes
  every write's bytes (and so its ETag) new, so a version can never come back (no ABA).
* ``payload``: the request body, streamed in (multipart above one part, ``If-None-Match: *``
  so a second create cannot overwrite it) and back out in chunks.
* ``result-<nonce>.json``: a result, written *before* the record that points at it, under a
  name of its writer's own, so a writer that loses the race cannot touch the winner's result.

Retention: a bucket lifecycle rule (``chute storage init``) deletes the prefix's objects after
the retention, in whole days; reads check ``expires_at`` meanwhile, so an expired request reads
as gone at once. See docs/sqs.md.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import anyio
import msgspec
from botocore.exceptions import ClientError

from chute.backends.base import DEFAULT_RETENTION, Store
from chute.backends.streams import limited_pieces
from chute.errors import Conflict, NotFound, PayloadTooLarge
from chute.protocol import RequestRecord, now, validate_api_name, validate_request_id
from chute_sqs.client import Clients, error_code, http_status, sdk_errors
from chute_sqs.settings import parse_s3_url

#: Multipart part size (S3's minimum is 5 MiB); a payload up to one part is a single PUT.
PART_SIZE: Final = 8 * 1024 * 1024
#: S3 allows 10,000 parts per upload: with 8 MiB parts, payloads up to 78 GiB.
MAX_PARTS: Final = 10_000
#: Bytes per chunk when a payload streams back.
READ_CHUNK: Final = 256 * 1024
#: Object metadata holding the request's expiry (so a payload read needs no record read).
META_EXPIRES: Final = "chute-expires-at"
RECORD: Final = "record.json"
PAYLOAD: Final = "payload"
_LOST_RACE: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"})


class _Stored(msgspec.Struct, frozen=True):
    """What ``record.json`` holds."""

    record: RequestRecord
    revision: int = 1
    result: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Stored)


@dataclass(frozen=True)
class _Version:
    """The version :meth:`S3Store.read` returns: the record object's ETag and what it said."""

    etag: str
    revision: int
    result: str | None


def _lost_race(exc: ClientError) -> bool:
    return error_code(exc) in _LOST_RACE or http_status(exc) in (409, 412)


class S3Store(Store):
    """chute's :class:`~chute.backends.base.Store` on Amazon S3 (``s3://<bucket>/<prefix>``)."""

    #: Objects are removed by the bucket's lifecycle rule, on S3's own schedule.
    purge_removes_expired = False

    #: No listing (the dashboard says the backend cannot list): a bucket lists keys only in
    #: ascending order and knows nothing of a record's status, so "the newest failed requests"
    #: would read every record object of the API. See docs/dashboard.md.
    supports_listing = False

    def __init__(self, url: str) -> None:
        self.settings = parse_s3_url(url)
        self.max_payload_size = self.settings.max_payload_size
        self._clients = Clients("s3", self.settings.endpoint)
        self.where = f"{self._clients.where}, bucket {self.settings.bucket}"

    def _base(self, api: str, request_id: str) -> str:
        validate_request_id(request_id)
        return f"{self.settings.prefix}/{validate_api_name(api)}/{request_id}/"

    # -- create ----------------------------------------------------------------------------

    async def create(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        base = self._base(record.api, record.id)
        doing = f"creating request {record.id} of {record.api}"
        size = await self._upload(base + PAYLOAD, record, body)
        stored = msgspec.structs.replace(record, payload_size=size)
        client = await self._clients.get()
        try:
            with sdk_errors(self.where, doing):
                await client.put_object(
                    Bucket=self.settings.bucket,
                    Key=base + RECORD,
                    Body=_encoder.encode(_Stored(stored)),
                    ContentType="application/json",
                    IfNoneMatch="*",
                )
        except BaseException:
            # The record is not there (or is someone else's): take our payload back.
            await self._discard(base + PAYLOAD)
            raise
        return stored

    async def _upload(self, key: str, record: RequestRecord, body: AsyncIterable[bytes]) -> int:
        """Stream ``body`` to ``key`` (created only if absent); return its size. On any error
        nothing is left: a multipart upload is aborted."""
        client = await self._clients.get()
        bucket = self.settings.bucket
        doing = f"uploading the payload of {record.id} of {record.api}"
        common: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "ContentType": record.content_type or "application/octet-stream",
            "Metadata": {META_EXPIRES: repr(record.expires_at)},
        }
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def send_part(data: bytes) -> None:
            if len(parts) >= MAX_PARTS:
                raise PayloadTooLarge(PART_SIZE * MAX_PARTS)
            number = len(parts) + 1
            with sdk_errors(self.where, doing):
                reply = await client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
            parts.append({"ETag": reply["ETag"], "PartNumber": number})

        try:
            pieces = limited_pieces(body, limit=self.max_payload_size, piece_size=PART_SIZE)
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if upload_id is None and not piece.last:  # larger than a part: multipart
                        with sdk_errors(self.where, doing):
                            reply = await client.create_multipart_upload(**common)
                        upload_id = str(reply["UploadId"])
                    if upload_id is None:  # it fits in one part: one conditional PUT
                        with sdk_errors(self.where, doing):
                            await client.put_object(Body=piece.data, IfNoneMatch="*", **common)
                    else:
                        await send_part(piece.data)
                    size = piece.end
            if upload_id is not None:
                with sdk_errors(self.where, doing):
                    await client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                        IfNoneMatch="*",
                    )
        except BaseException as exc:
            if upload_id is not None:
                await self._abort(key, upload_id)
            if isinstance(exc, Conflict):
                raise Conflict(f"request {record.id} of API {record.api} already exists") from exc
            raise
        return size

    async def _abort(self, key: str, upload_id: str) -> None:
        # Best effort, even when cancelled; the lifecycle rule aborts leftovers after a day.
        with anyio.move_on_after(10, shield=True), contextlib.suppress(Exception):
            client = await self._clients.get()
            await client.abort_multipart_upload(
                Bucket=self.settings.bucket, Key=key, UploadId=upload_id
            )

    async def _discard(self, *keys: str) -> None:
        with anyio.move_on_after(10, shield=True), contextlib.suppress(Exception):
            client = await self._clients.get()
            await client.delete_objects(
                Bucket=self.settings.bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )

    # -- records ---------------------------------------------------------------------------

    async def _get(self, key: str, doing: str) -> dict[str, Any] | None:
        """GetObject, or None if there is no such key."""
        client = await self._clients.get()
        with sdk_errors(self.where, doing):
            try:
                reply: dict[str, Any] = await client.get_object(
                    Bucket=self.settings.bucket, Key=key
                )
            except ClientError as exc:
                if error_code(exc) == "NoSuchKey":
                    return None
                raise
        return reply

    async def _get_bytes(self, key: str, doing: str) -> tuple[bytes, str] | None:
        reply = await self._get(key, doing)
        if reply is None:
            return None
        with sdk_errors(self.where, doing):
            async with reply["Body"] as stream:
                data: bytes = await stream.read()
        return data, str(reply["ETag"])

    async def read(self, api: str, request_id: str) -> tuple[RequestRecord, object] | None:
        base = self._base(api, request_id)
        found = await self._get_bytes(base + RECORD, f"reading request {request_id} of {api}")
        if found is None:
            return None
        stored = _decoder.decode(found[0])
        return stored.record, _Version(found[1], stored.revision, stored.result)

    async def write_if(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> bool:
        base = self._base(record.api, record.id)
        if not isinstance(version, _Version):
            raise TypeError(f"an S3 record version comes from read(), not {version!r}")
        client = await self._clients.get()
        bucket = self.settings.bucket
        doing = f"updating request {record.id} of {record.api}"
        result_name = version.result
        if result is not None:
            # The result first, under a name of this writer's own: the record only ever
            # points at a result that exists, and a losing writer cannot overwrite it.
            result_name = f"result-{secrets.token_hex(8)}.json"
            with sdk_errors(self.where, doing):
                await client.put_object(
                    Bucket=bucket,
                    Key=base + result_name,
                    Body=result,
                    ContentType="application/json",
                    Metadata={META_EXPIRES: repr(record.expires_at)},
                )
        stored = _Stored(record, version.revision + 1, result_name)
        try:
            with sdk_errors(self.where, doing):
                try:
                    await client.put_object(
                        Bucket=bucket,
                        Key=base + RECORD,
                        Body=_encoder.encode(stored),
                        ContentType="application/json",
                        IfMatch=version.etag,
                    )
                except ClientError as exc:
                    if not _lost_race(exc):
                        raise
                    if result is not None:
                        await self._discard(base + str(result_name))
                    return False
        except BaseException:
            if result is not None:
                await self._discard(base + str(result_name))
            raise
        return True

    async def payload(self, api: str, request_id: str) -> AsyncIterator[bytes]:
        base = self._base(api, request_id)
        doing = f"reading the payload of {request_id} of {api}"
        reply = await self._get(base + PAYLOAD, doing)
        if reply is None or _expired(reply):
            if reply is not None:
                reply["Body"].close()
            raise NotFound(f"request {request_id} of API {api} has no payload")
        async with reply["Body"] as stream:
            while True:
                with sdk_errors(self.where, doing):
                    chunk: bytes = await stream.read(READ_CHUNK)
                if not chunk:
                    return
                yield chunk

    async def result(self, api: str, request_id: str) -> bytes | None:
        found = await self.read(api, request_id)
        if found is None:
            return None
        record, version = found
        assert isinstance(version, _Version)
        if record.expires_at <= now() or version.result is None:
            return None
        base = self._base(api, request_id)
        data = await self._get_bytes(base + version.result, f"reading the result of {request_id}")
        return None if data is None else data[0]

    async def delete(self, api: str, request_id: str) -> bool:
        base = self._base(api, request_id)
        client = await self._clients.get()
        doing = f"deleting request {request_id} of {api}"
        with sdk_errors(self.where, doing):
            listing = await client.list_objects_v2(Bucket=self.settings.bucket, Prefix=base)
        keys = [item["Key"] for item in listing.get("Contents", [])]
        if not keys:
            return False
        with sdk_errors(self.where, doing):
            await client.delete_objects(
                Bucket=self.settings.bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
        return True

    # -- retention and health --------------------------------------------------------------

    @property
    def lifecycle_rule_id(self) -> str:
        """The ID of chute's lifecycle rule for this prefix."""
        return f"chute-expire-{self.settings.prefix}"[:255]

    async def initialize(self, *, retention: float = DEFAULT_RETENTION) -> list[str]:
        """Create the bucket if it is missing, and install (or update) a lifecycle rule that
        expires the prefix's objects ``ceil(retention)`` days after they were written and
        aborts multipart uploads left unfinished for a day. Other rules are kept."""
        client = await self._clients.get()
        bucket = self.settings.bucket
        lines: list[str] = []
        with sdk_errors(self.where, "checking the bucket"):
            try:
                await client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if http_status(exc) != 404:
                    raise
                args: dict[str, Any] = {"Bucket": bucket}
                region = self._clients.endpoint.region
                if region and region != "us-east-1":
                    args["CreateBucketConfiguration"] = {"LocationConstraint": region}
                await client.create_bucket(**args)
                lines.append(f"s3://{bucket}: created the bucket")
        days = max(1, math.ceil(retention / 86400))
        rule = {
            "ID": self.lifecycle_rule_id,
            "Filter": {"Prefix": f"{self.settings.prefix}/"},
            "Status": "Enabled",
            "Expiration": {"Days": days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        with sdk_errors(self.where, "reading the bucket's lifecycle rules"):
            try:
                reply = await client.get_bucket_lifecycle_configuration(Bucket=bucket)
                rules: list[dict[str, Any]] = list(reply.get("Rules", []))
            except ClientError as exc:
                if error_code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
        where = f"s3://{bucket}/{self.settings.prefix}/"
        mine = [r for r in rules if r.get("ID") == rule["ID"]]
        if mine and all(mine[0].get(k) == v for k, v in rule.items()):
            lines.append(f"{where}: lifecycle rule {rule['ID']} (expire after {days} d) in place")
            return lines
        others = [r for r in rules if r.get("ID") != rule["ID"]]
        with sdk_errors(self.where, "installing the lifecycle rule"):
            await client.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": [*others, rule]}
            )
        lines.append(f"{where}: lifecycle rule {rule['ID']} installed (expire after {days} d)")
        return lines

    async def ping(self) -> None:
        client = await self._clients.get()
        with sdk_errors(self.where, "ping"):
            await client.head_bucket(Bucket=self.settings.bucket)

    async def aclose(self) -> None:
        await self._clients.aclose()


def _expired(reply: dict[str, Any]) -> bool:
    """Whether a GetObject reply's request is past its expiry (metadata written at create)."""
    value = reply.get("Metadata", {}).get(META_EXPIRES)
    try:
        return value is not None and float(value) <= now()
    except ValueError:
        return False
