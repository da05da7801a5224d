"""Request records, payloads and results on Redis, with compare-and-set done by Lua.

Keys of one request (``<prefix>:s:<api>:{<id>}…``; the braces keep them in one Cluster slot):

* ``…{<id>}``          hash: ``record`` (msgspec JSON), ``version`` (integer), ``result``,
  ``expires`` (the expiry set on the keys, ms), ``payload`` when it is at most
  :data:`INLINE_PAYLOAD` bytes, ``token``, the creating call's nonce (a create retried
  after a lost reply succeeds), and ``start``, where the receive script puts the started
  record's changes into the record as created (:func:`start_hint`);
* ``…{<id>}:payload``  string: a larger payload's bytes, read back in ranges (GETRANGE); also
  every payload of a request created before payloads moved into the hash;
* ``…{<id>}:upload:…`` string: a payload above 1 MiB while it streams in, renamed into place
  by the create script (it expires by itself if the upload is abandoned).

Every key of a request expires at its record's ``expires_at`` (PEXPIREAT), so retention costs
nothing: Redis deletes the request on time. The expiry is set by the create and again only
when a write changes ``expires_at`` (writing hash fields keeps a key's expiry).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import NamedTuple

import anyio
import msgspec

from chute.backends.base import Joint, Queue, RequestPage, Store, Write
from chute.backends.streams import limited_pieces
from chute.errors import Conflict, NotFound
from chute.protocol import (
    RequestRecord,
    Status,
    record_decoder,
    record_encoder,
    validate_api_name,
    validate_request_id,
)
from chute_redis import listing, scripts
from chute_redis.connection import Connection, parse_url
from chute_redis.queue import RedisQueue

#: Payloads up to this size go to Redis in the create script itself (one round trip); larger
#: ones are appended to a temporary key in pieces of this size as they stream in.
UPLOAD_PIECE = 1024 * 1024
#: Bytes per GETRANGE when a payload is read back.
READ_PIECE = 256 * 1024
#: Payloads up to this size live in the record's hash (one key per request, read along with
#: the record in the same command); larger ones in a string key of their own.
INLINE_PAYLOAD = READ_PIECE
#: How long an abandoned upload may linger.
UPLOAD_TTL = 3600
#: The most items one batch script carries (a larger batch is split): Redis runs a script
#: alone, so one batch must stay short.
MAX_BATCH = 64


class _Keys(NamedTuple):
    record: str
    payload: str


def _expires_ms(record: RequestRecord) -> int:
    return int(record.expires_at * 1000)


_QUEUED = b',"status":"in_queue"'


def start_hint(record: RequestRecord, raw: bytes) -> str:
    """What the receive script needs to start ``record`` as created (``raw``: its JSON)
    without decoding it: ``status:tail:expires_at:created_at:queue_deadline``, the 1-based
    positions of the status field and of where ``attempt`` and ``started_at`` go, and the
    values it decides on, as msgspec wrote them. '' for a record the script must decode
    (not a fresh ``in_queue`` one: an attempt, an error or times to carry)."""
    if (
        record.status is not Status.IN_QUEUE
        or record.attempt
        or record.started_at is not None
        or record.finished_at is not None
        or record.error is not None
    ):
        return ""
    status = raw.find(_QUEUED)
    if status < 0:
        return ""
    tail = len(raw) - 1  # the closing brace
    # The fields ``attempt`` and ``started_at`` go before, in the order msgspec writes them
    # (joint_receive.lua's AFTER), each with whether the record has it.
    after = (
        ("queue_deadline", record.queue_deadline is not None),
        ("timeout", record.timeout is not None),
        ("cancel_requested", record.cancel_requested),
        ("extra", bool(record.extra)),
    )
    for name, present in after:
        if present:
            # The record's own field: no object comes before `extra`, and a quote after a
            # comma is never inside a JSON string.
            tail = raw.find(b',"' + name.encode() + b'":')
            break
    deadline = "" if record.queue_deadline is None else repr(record.queue_deadline)
    return f"{status + 1}:{tail + 1}:{record.expires_at!r}:{record.created_at!r}:{deadline}"


class RedisStore(Store):
    """chute's :class:`~chute.backends.base.Store` on a Redis server (``redis://``, ``rediss://``)."""

    def __init__(self, url: str) -> None:
        self.settings = parse_url(url)
        self.max_payload_size = self.settings.max_payload_size
        self._conn = Connection(self.settings)
        self._prefixes: dict[str, str] = {}
        self._creates: dict[str, int] = {}

    @property
    def connection(self) -> Connection:
        """The shared connection handle (``chute_redis.joint`` runs its scripts on it)."""
        return self._conn

    def _keys(self, api: str, request_id: str) -> _Keys:
        validate_request_id(request_id)
        record = f"{self.record_prefix(api)}{{{request_id}}}"
        return _Keys(record, f"{record}:payload")

    def record_keys(self, api: str, request_id: str) -> _Keys:
        """The keys of one request: its record hash and its own payload key."""
        return self._keys(api, request_id)

    async def create(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        return await self.create_with(record, body)

    async def create_with(
        self,
        record: RequestRecord,
        body: AsyncIterable[bytes],
        script: scripts.Script = scripts.STORE_CREATE,
        extra_keys: Sequence[str] = (),
        extra_args: Sequence[bytes | str | int | float] = (),
    ) -> RequestRecord:
        """:meth:`create` with ``script``: store_create.lua, or a script that runs it and
        more (``chute_redis.joint``), called with its keys and arguments plus the extras."""
        keys = self._keys(record.api, record.id)
        token = secrets.token_hex(8)
        upload = f"{keys.record}:upload:{token}"
        client = self._conn.client()
        doing = f"creating request {record.id} of {record.api}"
        inline = b""
        size = 0
        uploading = False
        pieces = limited_pieces(body, limit=self.max_payload_size, piece_size=UPLOAD_PIECE)
        try:
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if not piece.last:
                        # Large payload: move it to Redis piece by piece, never all in memory.
                        uploading = True  # from now on, a failure discards the upload key
                        with self._conn.op(doing):
                            async with client.pipeline(transaction=False) as pipe:
                                pipe.append(upload, piece.data)
                                pipe.expire(upload, UPLOAD_TTL)
                                await pipe.execute()
                    elif uploading:  # the upload's last piece (the first one set its TTL)
                        with self._conn.op(doing):
                            await client.append(upload, piece.data)
                    else:  # the whole payload is one piece: it goes in the script itself
                        inline = piece.data
                    size = piece.end
            stored = msgspec.structs.replace(record, payload_size=size)
            mode = "upload" if uploading else "hash" if size <= INLINE_PAYLOAD else "inline"
            script_keys, args = self.create_args(stored, mode, inline, token)
            script_keys[2] = upload
            with self._conn.op(doing):
                created = await script(client, [*script_keys, *extra_keys], [*args, *extra_args])
        except BaseException:
            if uploading:
                await self._discard(upload)
            raise
        if not created:
            raise Conflict(f"request {record.id} of API {record.api} already exists")
        return stored

    def create_args(
        self, record: RequestRecord, mode: str, inline: bytes, token: str
    ) -> tuple[list[str], list[bytes | str | int | float]]:
        """The keys and arguments of store_create.lua for ``record`` (its payload already
        counted in ``payload_size``); ``mode`` is ``hash``, ``inline`` or ``upload``."""
        keys = self._keys(record.api, record.id)
        span = listing.span_of(record)
        index = listing.index_key(self.record_prefix(record.api), span)
        # One create in TRIM_EVERY per index trims it (the first one of this process too).
        n = self._creates.get(index, 0)
        self._creates[index] = n + 1
        trim = repr(record.created_at - span) if n % listing.TRIM_EVERY == 0 else ""
        raw = record_encoder.encode(record)
        args: list[bytes | str | int | float] = [
            raw,
            _expires_ms(record),
            mode,
            inline,
            token,
            record.id,
            repr(record.created_at),
            trim,
            start_hint(record, raw),
        ]
        return [keys.record, keys.payload, f"{keys.record}:upload:none", index], args

    supports_listing = True

    async def list_requests(
        self,
        api: str,
        *,
        status: Status | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RequestPage:
        return await listing.list_requests(self, api, status=status, limit=limit, cursor=cursor)

    async def _discard(self, key: str) -> None:
        # Best effort, even when cancelled: the key would expire by itself anyway.
        with anyio.move_on_after(self.settings.timeout, shield=True):
            with contextlib.suppress(Exception):
                await self._conn.client().delete(key)

    async def read(self, api: str, request_id: str) -> tuple[RequestRecord, object] | None:
        keys = self._keys(api, request_id)
        client = self._conn.client()
        with self._conn.op(f"reading request {request_id} of {api}"):
            raw, version = await client.hmget(keys.record, ["record", "version"])
        if raw is None or version is None:
            return None
        return record_decoder.decode(raw), int(version)

    async def write_if(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> bool:
        return await self.write_next(record, version, result=result) is not None

    async def write_next(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> int | None:
        # The script answers with the new version: a following move needs no read.
        keys, args = self.write_args(record, version, result)
        client = self._conn.client()
        with self._conn.op(f"updating request {record.id} of {record.api}"):
            written = int(await scripts.STORE_WRITE_IF(client, keys, args))
        return written or None

    max_batch = MAX_BATCH

    async def write_many(self, writes: Sequence[Write]) -> list[object | None]:
        out: list[object | None] = []
        client = self._conn.client()
        for start in range(0, len(writes), MAX_BATCH):
            chunk = writes[start : start + MAX_BATCH]
            keys: list[str] = []
            args: list[bytes | str | int | float] = []
            for w in chunk:
                k, a = self.write_args(w.record, w.version, w.result)
                keys += k
                args += a
            with self._conn.op(f"updating {len(chunk)} requests"):
                reply = await scripts.STORE_WRITE_MANY(client, keys, args)
            out += [int(v) or None for v in reply]
        return out

    def write_args(
        self, record: RequestRecord, version: object, result: bytes | None
    ) -> tuple[list[str], list[bytes | str | int | float]]:
        """The keys and arguments of store_write_if.lua."""
        keys = self._keys(record.api, record.id)
        if not isinstance(version, int):
            raise TypeError(f"a Redis record version is an int, not {type(version).__name__}")
        args: list[bytes | str | int | float] = [
            version,
            record_encoder.encode(record),
            _expires_ms(record),
            0 if result is None else 1,
            b"" if result is None else result,
        ]
        return [keys.record, keys.payload], args

    @property
    def no_upload_key(self) -> str:
        """The upload key of creates whose payload came whole (batch creates): never written,
        only deleted when the create finds its id taken."""
        return f"{self.settings.prefix}:s:upload:none"

    def record_prefix(self, api: str) -> str:
        """What a record's key is before its ``{<id>}``."""
        prefix = self._prefixes.get(api)
        if prefix is None:  # checked and built once per API
            prefix = self._prefixes[api] = f"{self.settings.prefix}:s:{validate_api_name(api)}:"
        return prefix

    def joint(self, queue: Queue) -> Joint | None:
        """The one-round-trip receive and finish, when ``queue`` is on the same server and
        database as this store (same pool: same host, port, db and credentials)."""
        from chute_redis.joint import RedisJoint  # here: joint imports this module

        if isinstance(queue, RedisQueue) and queue.settings.pool_key == self.settings.pool_key:
            return RedisJoint(queue, self)
        return None

    async def payload(self, api: str, request_id: str) -> AsyncIterator[bytes]:
        keys = self._keys(api, request_id)
        client = self._conn.client()
        doing = f"reading the payload of request {request_id} of {api}"
        with self._conn.op(doing):
            async with client.pipeline(transaction=False) as pipe:
                pipe.hget(keys.record, "payload")
                pipe.exists(keys.payload)
                pipe.getrange(keys.payload, 0, READ_PIECE - 1)
                inline, exists, piece = await pipe.execute()
        if inline is not None:  # a small payload, in the record's hash
            if inline:
                yield inline
            return
        if not exists:
            raise NotFound(f"request {request_id} of API {api} has no payload")
        offset = 0
        while piece:
            offset += len(piece)
            yield piece
            if len(piece) < READ_PIECE:
                return
            with self._conn.op(doing):
                piece = await client.getrange(keys.payload, offset, offset + READ_PIECE - 1)

    async def result(self, api: str, request_id: str) -> bytes | None:
        keys = self._keys(api, request_id)
        client = self._conn.client()
        with self._conn.op(f"reading the result of {request_id} of {api}"):
            value = await client.hget(keys.record, "result")
        return value.encode() if isinstance(value, str) else value

    async def delete(self, api: str, request_id: str) -> bool:
        keys = self._keys(api, request_id)
        client = self._conn.client()
        with self._conn.op(f"deleting request {request_id} of {api}"):
            return bool(await client.delete(keys.record, keys.payload))

    async def ping(self) -> None:
        client = self._conn.client()
        with self._conn.op("ping"):
            await client.ping()

    async def aclose(self) -> None:
        await self._conn.aclose()
