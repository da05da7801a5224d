"""The embedded store: request records, chunked payloads and results in an SQLite file.

A payload is written in ~1 MiB chunks, each in its own short transaction, so a slow upload
never holds the file's write lock; the record row is inserted last, in one transaction, so a
reader either sees a complete request or none. Records carry an integer ``version``: a
conditional write is ``UPDATE … WHERE version = ?``.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from functools import partial

import anyio
import msgspec

from chute.backends._sqlite.db import Database, write_transaction
from chute.backends.base import Joint, Queue, RequestPage, Store, Write
from chute.backends.listing import check_limit, decode_cursor, page_of
from chute.backends.streams import limited_pieces
from chute.errors import Conflict, NotFound
from chute.protocol import (
    RequestRecord,
    Status,
    now,
    record_decoder,
    record_encoder,
    validate_request_id,
)

#: Payload bytes per stored chunk (and the most one upload keeps in memory).
CHUNK_SIZE = 1024 * 1024
#: Chunks not referenced by a record after this long are left over from a crashed upload.
ORPHAN_AGE = 3600.0
#: Expired records deleted per transaction by purge_expired (keeps the write lock short).
PURGE_BATCH = 200


class SqliteStore(Store):
    """Request records, payloads and results in an SQLite file (``sqlite:///path.db``).

    URL option ``max_payload_size`` (bytes) caps payloads; by default there is no cap of the
    store's own (the gateway has one).
    """

    def __init__(self, url: str) -> None:
        self._db = Database(url)
        self.max_payload_size = self._db.options.get("max_payload_size")

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._db.path)!r})"

    # -- create ----------------------------------------------------------------------------

    async def create(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        return await self.create_with(record, body)

    async def create_with(
        self,
        record: RequestRecord,
        body: AsyncIterable[bytes],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> RequestRecord:
        """:meth:`create`, running ``also`` in the transaction that inserts the record (the
        joint submit queues the id there). A payload of one piece is written in that same
        transaction: a small request is one hop to the database thread."""
        api, request_id = record.api, validate_request_id(record.id)
        upload = secrets.token_hex(12)
        size = chunks = 0
        first: bytes | None = None  # the first piece, held until we know it is the only one
        pieces = limited_pieces(body, limit=self.max_payload_size, piece_size=CHUNK_SIZE)
        try:
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if piece.last and chunks == 0:
                        first = piece.data
                    else:
                        if chunks == 0 and await self._db.run(
                            lambda conn: _exists(conn, api, request_id)
                        ):  # a large body for a taken id: do not upload it
                            raise Conflict(f"request {request_id} of API {api} already exists")
                        await self._db.run(partial(_write_chunk, upload, chunks, piece.data))
                        chunks += 1
                    size = piece.end
            stored = msgspec.structs.replace(record, payload_size=size)
            encoded = record_encoder.encode(stored)

            def insert(conn: sqlite3.Connection) -> bool:
                with write_transaction(conn):
                    made = insert_record(
                        conn, stored, encoded, upload, chunks + (1 if first else 0)
                    )
                    if made:
                        if first:
                            _write_chunk(upload, chunks, first, conn)
                        if also is not None:
                            also(conn)
                return made

            if not await self._db.run(insert):
                raise Conflict(f"request {request_id} of API {api} already exists")
        except BaseException:
            with anyio.CancelScope(shield=True):  # clean up even when cancelled
                await self._drop_chunks(upload)
            raise
        return stored

    async def _drop_chunks(self, upload: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM store_chunks WHERE upload = ?", (upload,))

        # The original error matters more; purge_expired removes what is left over.
        with contextlib.suppress(Exception):
            await self._db.run(delete)

    # -- read ------------------------------------------------------------------------------

    async def read(self, api: str, request_id: str) -> tuple[RequestRecord, object] | None:
        validate_request_id(request_id)

        def select(conn: sqlite3.Connection) -> tuple[bytes, int] | None:
            row = conn.execute(
                "SELECT record, version FROM store_records WHERE api = ? AND id = ?",
                (api, request_id),
            ).fetchone()
            return None if row is None else (row[0], row[1])

        found = await self._db.run(select)
        if found is None:
            return None
        return record_decoder.decode(found[0]), found[1]

    async def payload(self, api: str, request_id: str) -> AsyncIterator[bytes]:
        validate_request_id(request_id)

        def locate(conn: sqlite3.Connection) -> tuple[str, int] | None:
            row = conn.execute(
                "SELECT upload, chunks FROM store_records "
                "WHERE api = ? AND id = ? AND expires_at > ?",
                (api, request_id, now()),
            ).fetchone()
            return None if row is None else (row[0], row[1])

        found = await self._db.run(locate)
        if found is None:
            raise NotFound(f"no payload for request {request_id} of API {api}")
        upload, count = found
        for seq in range(count):  # one chunk in memory at a time

            def chunk(conn: sqlite3.Connection, seq: int = seq) -> bytes | None:
                row = conn.execute(
                    "SELECT data FROM store_chunks WHERE upload = ? AND seq = ?", (upload, seq)
                ).fetchone()
                return None if row is None else bytes(row[0])

            data = await self._db.run(chunk)
            if data is None:  # deleted or expired while we were reading it
                raise NotFound(f"the payload of request {request_id} of API {api} is gone")
            yield data

    async def result(self, api: str, request_id: str) -> bytes | None:
        validate_request_id(request_id)

        def select(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT result FROM store_records WHERE api = ? AND id = ? AND expires_at > ?",
                (api, request_id, now()),
            ).fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

        return await self._db.run(select)

    # -- write -----------------------------------------------------------------------------

    def joint(self, queue: Queue) -> Joint | None:
        """Submit, receive and settle in one transaction each, when ``queue`` is an SQLite
        queue of the same file."""
        from chute.backends._sqlite.joint import SqliteJoint  # it imports this module
        from chute.backends._sqlite.queue import SqliteQueue

        if isinstance(queue, SqliteQueue) and queue.path == self._db.path:
            return SqliteJoint(queue, self)
        return None

    async def write_if(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> bool:
        validate_request_id(record.id)
        if not isinstance(version, int):
            return False  # not a version this store handed out
        encoded = record_encoder.encode(record)
        return await self._db.run(partial(_update, record, encoded, version, result))

    #: Writes of one batch share a transaction (one commit, one fsync where there is one).
    max_batch = 64

    async def write_many(self, writes: Sequence[Write]) -> list[object | None]:
        for w in writes:
            validate_request_id(w.record.id)
        encoded = [(w.record, record_encoder.encode(w.record), w.version, w.result) for w in writes]

        def update_all(conn: sqlite3.Connection) -> list[object | None]:
            with write_transaction(conn):
                return [
                    version + 1
                    if isinstance(version, int) and _update(record, raw, version, result, conn)
                    else None
                    for record, raw, version, result in encoded
                ]

        return await self._db.run(update_all)

    async def write_next(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> int | None:
        # The UPDATE moves the version from exactly ``version`` to ``version + 1``.
        if await self.write_if(record, version, result=result):
            assert isinstance(version, int)
            return version + 1
        return None

    # -- listing ---------------------------------------------------------------------------

    supports_listing = True

    async def list_requests(
        self,
        api: str,
        *,
        status: Status | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RequestPage:
        """One page from the ``(api, [status,] created_at, id)`` indexes: at most ``limit + 1``
        rows are read, however many records the API holds."""
        check_limit(limit)
        after = decode_cursor(cursor) if cursor is not None else None
        at = now()
        sql = "SELECT record FROM store_records WHERE api = ? AND expires_at > ?"
        args: list[object] = [api, at]
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        if after is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args += [after.created_at, after.created_at, after.request_id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit + 1)

        def select(conn: sqlite3.Connection) -> list[bytes]:
            return [bytes(row[0]) for row in conn.execute(sql, args)]

        rows = await self._db.run(select)
        records = [record_decoder.decode(raw) for raw in rows]
        return page_of(records, status=status, limit=limit, cursor=cursor, at=at)

    async def delete(self, api: str, request_id: str) -> bool:
        validate_request_id(request_id)

        def delete(conn: sqlite3.Connection) -> bool:
            with write_transaction(conn):
                row = conn.execute(
                    "DELETE FROM store_records WHERE api = ? AND id = ? RETURNING upload",
                    (api, request_id),
                ).fetchone()
                if row is None:
                    return False
                conn.execute("DELETE FROM store_chunks WHERE upload = ?", (row[0],))
                return True

        return await self._db.run(delete)

    async def purge_expired(self) -> int:
        """Delete expired records with their payloads and results, a batch per transaction,
        then chunks that no record references and that are older than an hour (crashed
        uploads)."""

        def purge_batch(conn: sqlite3.Connection) -> int:
            with write_transaction(conn):
                rows = conn.execute(
                    "SELECT api, id, upload FROM store_records WHERE expires_at <= ? LIMIT ?",
                    (now(), PURGE_BATCH),
                ).fetchall()
                for api, request_id, upload in rows:
                    conn.execute(
                        "DELETE FROM store_records WHERE api = ? AND id = ?", (api, request_id)
                    )
                    conn.execute("DELETE FROM store_chunks WHERE upload = ?", (upload,))
                return len(rows)

        def purge_orphans(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM store_chunks WHERE created_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM store_records r WHERE r.upload = store_chunks.upload)",
                (now() - ORPHAN_AGE,),
            )

        total = 0
        while batch := await self._db.run(purge_batch):
            total += batch
        await self._db.run(purge_orphans)
        return total

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        await self._db.aclose()


def _exists(conn: sqlite3.Connection, api: str, request_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM store_records WHERE api = ? AND id = ?", (api, request_id)
    ).fetchone()
    return row is not None


def insert_record(
    conn: sqlite3.Connection,
    record: RequestRecord,
    encoded: bytes,
    upload: str,
    chunks: int,
) -> bool:
    """Insert a new record row (``encoded`` is ``record`` as stored); False if the id is taken
    (nothing inserted)."""
    try:
        conn.execute(
            "INSERT INTO store_records "
            "(api, id, record, version, expires_at, upload, chunks, created_at, status) "
            "VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)",
            (
                record.api,
                record.id,
                encoded,
                record.expires_at,
                upload,
                chunks,
                record.created_at,
                record.status.value,
            ),
        )
    except sqlite3.IntegrityError:
        return False
    return True


def read_with_payload(
    conn: sqlite3.Connection, api: str, request_id: str, inline: int
) -> tuple[bytes, int, bytes | None] | None:
    """A live record's JSON and version, with its payload when it is one chunk of at most
    ``inline`` bytes (else None: stream it); None if there is no live record."""
    row = conn.execute(
        "SELECT record, version, upload, chunks FROM store_records "
        "WHERE api = ? AND id = ? AND expires_at > ?",
        (api, request_id, now()),
    ).fetchone()
    if row is None:
        return None
    raw, version, upload, chunks = row
    payload: bytes | None = None
    if chunks == 0:
        payload = b""
    elif chunks == 1:
        data = conn.execute(
            "SELECT data FROM store_chunks WHERE upload = ? AND seq = 0 AND length(data) <= ?",
            (upload, inline),
        ).fetchone()
        payload = None if data is None else bytes(data[0])
    return bytes(raw), int(version), payload


def write_chunk(upload: str, seq: int, data: bytes, conn: sqlite3.Connection) -> None:
    """Store one chunk of a payload (``upload`` names the payload)."""
    _write_chunk(upload, seq, data, conn)


def update_record(
    record: RequestRecord,
    encoded: bytes,
    version: int,
    result: bytes | None,
    conn: sqlite3.Connection,
) -> bool:
    """The conditional write of :meth:`SqliteStore.write_if`."""
    return _update(record, encoded, version, result, conn)


def _write_chunk(upload: str, seq: int, data: bytes, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO store_chunks (upload, seq, data, created_at) VALUES (?, ?, ?, ?)",
        (upload, seq, data, now()),
    )


def _update(
    record: RequestRecord,
    encoded: bytes,
    version: int,
    result: bytes | None,
    conn: sqlite3.Connection,
) -> bool:
    """The conditional write: from exactly ``version`` to ``version + 1``."""
    cursor = conn.execute(
        "UPDATE store_records SET record = ?, version = version + 1, expires_at = ?, "
        "status = ?, result = COALESCE(?, result) WHERE api = ? AND id = ? AND version = ?",
        (encoded, record.expires_at, record.status.value, result, record.api, record.id, version),
    )
    return cursor.rowcount == 1
