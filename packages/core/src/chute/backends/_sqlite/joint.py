"""The :class:`~chute.backends.base.Joint` fast path when the SQLite queue and store are one
file: what the generic path does in several hops to the database thread (each a hand-off
between the event loop and a worker thread, the main cost of a request on SQLite) is one
transaction, and a batch of them is one transaction too.

* submit: the record, a one-piece payload and the queued message in one transaction;
* receive: the lease (``_sqlite.queue.lease_messages``) and each delivery's live record and
  small payload, in one hop;
* the acking write: the conditional write and the ack in one transaction.

The statements are the queue's and the store's own functions; nothing is written twice.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterable, Sequence
from functools import partial

import msgspec

from chute.backends._sqlite.db import write_transaction
from chute.backends._sqlite.queue import SqliteQueue, delete_held, insert_message, lease_messages
from chute.backends._sqlite.store import (
    CHUNK_SIZE,
    SqliteStore,
    insert_record,
    read_with_payload,
    update_record,
    write_chunk,
)
from chute.backends.base import AckingWrite, Delivery, Joint, Received, Settle, Settled, Submit
from chute.errors import ChuteError, Conflict, InvalidRequestId, PayloadTooLarge
from chute.protocol import RequestRecord, record_decoder, record_encoder, validate_request_id

#: Payloads up to this size come along with a receive; larger ones stream from the store.
INLINE_PAYLOAD = 256 * 1024
#: The most items one transaction carries.
MAX_BATCH = 64

_Row = tuple[Delivery, tuple[bytes, int, bytes | None] | None]


class SqliteJoint(Joint):
    """What :meth:`SqliteStore.joint` returns for a :class:`SqliteQueue` of the same file."""

    max_batch = MAX_BATCH

    def __init__(self, queue: SqliteQueue, store: SqliteStore) -> None:
        self.queue = queue
        self.store = store

    async def submit(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        api, request_id = record.api, record.id
        stored = await self.store.create_with(
            record, body, also=lambda conn: insert_message(conn, api, request_id, 0.0)
        )
        self.queue.wrote()
        return stored

    async def submit_many(self, submits: Sequence[Submit]) -> list[RequestRecord | ChuteError]:
        limit = self.store.max_payload_size
        answers: list[RequestRecord | ChuteError | None] = [None] * len(submits)
        rows: list[tuple[int, RequestRecord, bytes]] = []
        for i, (record, payload) in enumerate(submits):
            validate_request_id(record.id)
            if limit is not None and len(payload) > limit:
                answers[i] = PayloadTooLarge(limit)
            else:
                stored = msgspec.structs.replace(record, payload_size=len(payload))
                rows.append((i, stored, record_encoder.encode(stored)))

        def insert_all(conn: sqlite3.Connection) -> list[bool]:
            made = []
            with write_transaction(conn):
                for i, stored, encoded in rows:
                    payload = submits[i].payload
                    pieces = [
                        payload[at : at + CHUNK_SIZE] for at in range(0, len(payload), CHUNK_SIZE)
                    ]
                    upload = secrets.token_hex(12)
                    ok = insert_record(conn, stored, encoded, upload, len(pieces))
                    if ok:
                        for seq, piece in enumerate(pieces):
                            write_chunk(upload, seq, piece, conn)
                        insert_message(conn, stored.api, stored.id, 0.0)
                    made.append(ok)
            return made

        if rows:
            made = await self.queue.run(insert_all)
            self.queue.wrote()
            for (i, stored, _), ok in zip(rows, made, strict=True):
                answers[i] = (
                    stored
                    if ok
                    else Conflict(f"request {stored.id} of API {stored.api} already exists")
                )
        return [a for a in answers if a is not None]

    async def receive(
        self, api: str, *, max_messages: int = 1, wait: float = 20.0, lease: float = 30.0
    ) -> list[Received]:
        rows = await self.queue.receive_with(
            partial(_lease_and_read, api, max_messages, lease),
            max_messages=max_messages,
            wait=wait,
            lease=lease,
        )
        received = []
        for delivery, row in rows:
            found = None
            payload = None
            if row is not None:
                raw, version, payload = row
                found = (record_decoder.decode(raw), version)
            received.append(Received(delivery, found, payload if found is not None else None))
        return received

    def acking(self, delivery: Delivery) -> AckingWrite:
        return _AckingWrite(self, delivery)

    async def settle_many(self, settles: Sequence[Settle]) -> list[Settled]:
        items = [(s, record_encoder.encode(s.record)) for s in settles]
        for s, _ in items:
            _check(s.delivery, s.record)

        def settle_all(conn: sqlite3.Connection) -> list[Settled]:
            with write_transaction(conn):
                return [_settle(conn, s, encoded) for s, encoded in items]

        return await self.queue.run(settle_all)


def _check(d: Delivery, record: RequestRecord) -> None:
    if (record.api, record.id) != (d.api, d.request_id):
        raise ValueError(f"the record of {record.id} is not the one of {d.request_id}")


def _settle(conn: sqlite3.Connection, s: Settle, encoded: bytes) -> Settled:
    if not isinstance(s.version, int) or not update_record(
        s.record, encoded, s.version, s.result, conn
    ):
        return Settled(None, False)
    return Settled(s.version + 1, delete_held(conn, s.delivery))


def _lease_and_read(
    api: str, max_messages: int, lease: float, conn: sqlite3.Connection
) -> tuple[list[_Row], int, float | None]:
    deliveries, version, first = lease_messages(api, max_messages, lease, conn)
    rows: list[_Row] = []
    for d in deliveries:
        try:
            validate_request_id(d.request_id)
        except InvalidRequestId:
            rows.append((d, None))  # the generic path's read would refuse it: no record
            continue
        rows.append((d, read_with_payload(conn, api, d.request_id, INLINE_PAYLOAD)))
    return rows, version, first


class _AckingWrite(AckingWrite):
    def __init__(self, joint: SqliteJoint, delivery: Delivery) -> None:
        self.joint = joint
        self.delivery = delivery

    async def __call__(
        self, record: RequestRecord, version: object, result: bytes | None
    ) -> object | None:
        _check(self.delivery, record)
        encoded = record_encoder.encode(record)
        settle = Settle(self.delivery, record, version, result)

        def write(conn: sqlite3.Connection) -> Settled:
            with write_transaction(conn):
                return _settle(conn, settle, encoded)

        settled = await self.joint.queue.run(write)
        self.acked = settled.acked
        return settled.version
