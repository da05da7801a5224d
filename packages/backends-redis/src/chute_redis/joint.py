"""The :class:`~chute.backends.base.Joint` fast path when queue and store share one Redis
server and database: a create that sends in the same step, a receive that reads each
delivery's record (and small payload) in the same script, and a store-the-outcome-and-ack
script. The scripts run the queue's and the store's own scripts as functions
(``scripts._load(..., uses)``), so no rule is written twice. A submit costs 1 round trip
instead of 2, a dequeued request 2 instead of 6, the start written by the receive script
(docs/redis.md)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence

import msgspec

from chute.backends.base import (
    AckingWrite,
    Delivery,
    Joint,
    Received,
    Settle,
    Settled,
    Submit,
)
from chute.errors import ChuteError, Conflict, InvalidRequestId, PayloadTooLarge
from chute.protocol import (
    RequestRecord,
    now,
    record_decoder,
    validate_request_id,
)
from chute_redis import scripts
from chute_redis.queue import RedisQueue, delivery_of
from chute_redis.store import INLINE_PAYLOAD, MAX_BATCH, UPLOAD_PIECE, RedisStore


class RedisJoint(Joint):
    """What :meth:`RedisStore.joint` returns for a :class:`RedisQueue` on the same server."""

    max_batch = MAX_BATCH

    def __init__(self, queue: RedisQueue, store: RedisStore) -> None:
        self.queue = queue
        self.store = store

    async def submit(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        return await self.store.create_with(
            record, body, scripts.JOINT_CREATE, self.queue.send_keys(record.api)
        )

    async def submit_many(self, submits: Sequence[Submit]) -> list[RequestRecord | ChuteError]:
        """Up to :data:`MAX_BATCH` creates-and-sends per script (joint_create_many.lua); a
        payload above 1 MiB goes alone, streamed as :meth:`submit` streams it."""
        answers: list[RequestRecord | ChuteError | None] = [None] * len(submits)
        store, limit = self.store, self.store.max_payload_size
        batch: list[tuple[int, RequestRecord]] = []
        for i, (record, payload) in enumerate(submits):
            if limit is not None and len(payload) > limit:
                answers[i] = PayloadTooLarge(limit)
            elif len(payload) > UPLOAD_PIECE:
                try:
                    answers[i] = await self.submit(record, _once(payload))
                except Conflict as exc:
                    answers[i] = exc
            else:
                batch.append((i, msgspec.structs.replace(record, payload_size=len(payload))))
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH]
            keys, args = self.create_many_args([(r, submits[i].payload) for i, r in chunk])
            with store.connection.op(f"creating {len(chunk)} requests"):
                created = await scripts.JOINT_CREATE_MANY(store.connection.client(), keys, args)
            for (i, stored), made in zip(chunk, created, strict=True):
                answers[i] = (
                    stored
                    if int(made)
                    else Conflict(f"request {stored.id} of API {stored.api} already exists")
                )
        return [a for a in answers if a is not None]

    def create_many_args(
        self, items: Sequence[tuple[RequestRecord, bytes]]
    ) -> tuple[list[str], list[bytes | str | int | float]]:
        """joint_create_many.lua's keys and arguments for records (``payload_size`` set) and
        their whole payloads: each API's queue keys once, then each request's own."""
        apis = _ApiKeys(self.queue.send_keys)
        keys: list[str] = []
        args: list[bytes | str | int | float] = []
        for record, payload in items:
            mode = "hash" if len(payload) <= INLINE_PAYLOAD else "inline"
            k, a = self.store.create_args(record, mode, payload, secrets.token_hex(8))
            keys += (k[0], k[1], k[3])  # record, payload, listing index (no upload)
            args += (apis.number(record.api), *a)
        return [self.store.no_upload_key, *apis.keys, *keys], [len(apis.numbers), *args]

    #: The receive script starts the records it may (joint_receive.lua, docs/redis.md).
    starts_on_receive = True

    async def receive(
        self,
        api: str,
        *,
        max_messages: int = 1,
        wait: float = 20.0,
        lease: float = 30.0,
        start: bool = False,
        queue_limit: float | None = None,
    ) -> list[Received]:
        prefix = self.store.record_prefix(api)
        at = 0.0

        def extra() -> list[bytes | str | int | float]:
            # The time of each run of the script: the started_at of what it starts.
            nonlocal at
            at = now()
            limit = "" if queue_limit is None else repr(float(queue_limit))
            return [prefix, "1" if start else "", msgspec.json.encode(at), limit]

        rows = await self.queue.receive_rows(
            api,
            scripts.JOINT_RECEIVE,
            extra,
            7,
            max_messages=max_messages,
            wait=wait,
            lease=lease,
        )
        received = []
        for row in rows:
            delivery = delivery_of(api, row)
            raw, version, payload, started = row[3], row[4], row[5], bool(row[6])
            found = None
            try:
                validate_request_id(delivery.request_id)
            except InvalidRequestId:
                raw, started = None, False  # the generic path's read would refuse it: no record
            if raw is not None and version is not None:
                record: RequestRecord = record_decoder.decode(raw)
                # Judged at the time the script judged it by: a started record is live.
                if record.expires_at > at:
                    found = (record, int(version))
            inline = payload if found is not None and isinstance(payload, bytes) else None
            received.append(Received(delivery, found, inline, started and found is not None))
        return received

    def acking(self, delivery: Delivery) -> AckingWrite:
        return _AckingWrite(self, delivery)

    async def settle_many(self, settles: Sequence[Settle]) -> list[Settled]:
        out: list[Settled] = []
        for start in range(0, len(settles), MAX_BATCH):
            chunk = settles[start : start + MAX_BATCH]
            keys, args = self.settle_many_args(chunk)
            with self.store.connection.op(f"settling {len(chunk)} requests"):
                reply = await scripts.JOINT_SETTLE_MANY(self.store.connection.client(), keys, args)
            out += [
                Settled(int(reply[i]) or None, bool(reply[i + 1])) for i in range(0, len(reply), 2)
            ]
        return out

    def settle_many_args(
        self, settles: Sequence[Settle]
    ) -> tuple[list[str], list[bytes | str | int | float]]:
        """joint_settle_many.lua's keys and arguments: each API's queue keys once, then each
        settle's record keys, compare-and-set, id and receipt."""
        apis = _ApiKeys(self.queue.ack_keys)
        keys: list[str] = []
        args: list[bytes | str | int | float] = []
        for item in settles:
            d = item.delivery
            k, a = self._write_args(d, item.record, item.version, item.result)
            keys += k
            args += (apis.number(d.api), *a, d.request_id, d.receipt)
        return [*apis.keys, *keys], [len(apis.numbers), *args]

    def finish_args(
        self, d: Delivery, record: RequestRecord, version: object, result: bytes | None
    ) -> tuple[list[str], list[bytes | str | int | float]]:
        """The keys and arguments of joint_finish.lua."""
        keys, args = self._write_args(d, record, version, result)
        keys += self.queue.ack_keys(d.api)
        args += [d.request_id, d.receipt]
        return keys, args

    def _write_args(
        self, d: Delivery, record: RequestRecord, version: object, result: bytes | None
    ) -> tuple[list[str], list[bytes | str | int | float]]:
        """store_write_if.lua's keys and arguments for the record of ``d``'s request."""
        if (record.api, record.id) != (d.api, d.request_id):
            raise ValueError(f"the record of {record.id} is not the one of {d.request_id}")
        return self.store.write_args(record, version, result)


class _ApiKeys:
    """The APIs of one batch script: each API's queue keys once (``keys``, in the order the
    APIs first come), and the number of its place that each request names instead."""

    def __init__(self, keys_of: Callable[[str], list[str]]) -> None:
        self._keys_of = keys_of
        self.numbers: dict[str, int] = {}
        self.keys: list[str] = []

    def number(self, api: str) -> int:
        n = self.numbers.get(api)
        if n is None:
            n = self.numbers[api] = len(self.numbers) + 1
            self.keys += self._keys_of(api)
        return n


class _AckingWrite(AckingWrite):
    def __init__(self, joint: RedisJoint, delivery: Delivery) -> None:
        self.joint = joint
        self.delivery = delivery

    async def __call__(
        self, record: RequestRecord, version: object, result: bytes | None
    ) -> int | None:
        d = self.delivery
        store = self.joint.store
        keys, args = self.joint.finish_args(d, record, version, result)
        with store.connection.op(f"storing the outcome of {d.request_id} of {d.api}"):
            written, acked = await scripts.JOINT_FINISH(store.connection.client(), keys, args)
        self.acked = bool(acked)
        return int(written) or None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
