"""A reliable queue with leases on Redis: sorted sets, Lua scripts, and BLPOP as the wake-up.

Keys of one API (``<prefix>:q:{<api>}:…``; the braces keep them in one Redis Cluster slot):

* ``visible``  list of request ids ready to be received, oldest first (RPUSH, LPOP);
* ``delayed``  sorted set of ids not visible yet (a send or release with a delay), scored by
  the time (ms) they become visible; a receive moves the due ones to ``visible`` in bulk;
* ``leased``   sorted set of ids scored by their lease's end (ms); a receive moves the lapsed
  ones to ``visible`` in bulk;
* ``receipts`` hash id → the receipt of the current delivery (who holds the lease);
* ``attempts`` hash id → deliveries so far (the store's fencing token); present from the send
  to the ack, which makes a send of a known id a no-op;
* ``dead``     sorted set of dead-lettered ids in the order they died (scored by the counter
  ``dead_seq``), ``dead_info`` hash id → reason, attempts and time of death;
* ``wake``     a list used only as a signal: ``send`` pushes a token, idle receivers BLPOP it;
* ``ready``    the sorted set of visible and delayed ids of versions before the list: a receive
  moves what it finds there to ``visible``/``delayed``, so a queue survives the upgrade.

Every operation is one Lua script, so each is atomic and one round trip. Time is the server's
(``TIME``), so consumers with skewed clocks agree on when a lease lapses. A plain send and a
receive cost no sorted-set scan per message: a receive leases up to ``max_messages`` with one
LPOP, one HSET of receipts and one ZADD of leases, plus a HINCRBY of each attempt.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import anyio
import msgspec

from chute.backends.base import DeadLetter, Delivery, Queue, QueueDepth
from chute.errors import LeaseLost
from chute.protocol import now, validate_api_name, validate_request_id
from chute_redis import scripts
from chute_redis.connection import Connection, parse_url


class _Keys(NamedTuple):
    ready: str
    leased: str
    receipts: str
    attempts: str
    dead: str
    dead_info: str
    dead_seq: str
    wake: str
    visible: str
    delayed: str


class _DeadInfo(msgspec.Struct, frozen=True):
    reason: str
    attempts: int
    dead_at: float


_dead_encoder = msgspec.json.Encoder()
_dead_decoder = msgspec.json.Decoder(_DeadInfo)


#: A receive that may wait at least this long starts on the wake list after a drained one
#: (one waiting less, a short poll runs the script at once).
DRAINED_MIN_WAIT = 0.1
#: How often (seconds) a receive moves lapsed leases, due delayed messages and the old
#: layout's messages to the visible list even when the list holds enough to fill it; in
#: between, only a receive the list cannot fill does (3 commands saved per receive of a busy
#: queue; a due message waits at most this long behind a full list).
PROMOTE_EVERY = 0.05


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def delivery_of(api: str, row: Sequence[Any]) -> Delivery:
    """The delivery a receive script's row starts with: id, attempt, receipt."""
    return Delivery(api, _text(row[0]), int(row[1]), _text(row[2]))


class RedisQueue(Queue):
    """chute's :class:`~chute.backends.base.Queue` on a Redis server (``redis://``, ``rediss://``)."""

    #: Leases are kept in milliseconds of server time; anything from 10 ms is honoured.
    min_lease = 0.05
    #: One receive script leases up to this many messages.
    max_batch = 64

    def __init__(self, url: str) -> None:
        self.settings = parse_url(url)
        self._conn = Connection(self.settings)
        self._key_cache: dict[str, _Keys] = {}
        #: API → when (anyio clock) the next timed message of its queue is due (inf: none),
        #: set by a receive that leased messages and drained the visible ones: the next
        #: receive of that API starts by waiting on the wake list, not with a script that
        #: would find the queue empty (what a lone request's dequeuer did after each one).
        self._drained: dict[str, float] = {}
        #: When (anyio clock) a receive of this object last moved what is due to the visible
        #: list whether or not the list could fill it (see :data:`PROMOTE_EVERY`).
        self._promoted: dict[str, float] = {}
        self.promote_every = PROMOTE_EVERY

    def _keys(self, api: str) -> _Keys:
        # Built once per API: every call of every request needs them.
        keys = self._key_cache.get(api)
        if keys is None:
            base = f"{self.settings.prefix}:q:{{{validate_api_name(api)}}}:"
            keys = self._key_cache[api] = _Keys(*(base + name for name in _Keys._fields))
        return keys

    async def send(self, api: str, request_id: str, *, delay: float = 0.0) -> None:
        validate_request_id(request_id)
        client = self._conn.client()
        with self._conn.op(f"sending {request_id} to {api}"):
            await scripts.QUEUE_SEND(client, self.send_keys(api), [request_id, _ms(delay), 0])

    def send_keys(self, api: str) -> list[str]:
        """The keys queue_send.lua takes."""
        keys = self._keys(api)
        return [keys.visible, keys.delayed, keys.attempts, keys.wake]

    async def receive(
        self, api: str, *, max_messages: int = 1, wait: float = 20.0, lease: float = 30.0
    ) -> list[Delivery]:
        rows = await self.receive_rows(
            api, scripts.QUEUE_RECEIVE, list, 3, max_messages=max_messages, wait=wait, lease=lease
        )
        return [delivery_of(api, row) for row in rows]

    async def receive_rows(
        self,
        api: str,
        script: scripts.Script,
        extra: Callable[[], list[bytes | str | int | float]],
        width: int,
        *,
        max_messages: int,
        wait: float,
        lease: float,
    ) -> list[list[Any]]:
        """The receive loop with ``script``: queue_receive.lua, or a script that runs it and
        adds to each delivery (``chute_redis.joint``), called with the receive's keys and
        arguments followed by what ``extra()`` answers (asked before each run of the script).
        Returns the reply's rows of ``width`` values, the first three of each being id, attempt
        and receipt."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        keys = self._keys(api)
        client = self._conn.client()
        script_keys = [
            keys.visible,
            keys.delayed,
            keys.leased,
            keys.receipts,
            keys.attempts,
            keys.wake,
            keys.ready,
        ]
        fixed: list[bytes | str | int | float] = [max_messages, max(1, _ms(lease))]
        start = anyio.current_time()
        end = start + max(0.0, wait)
        doing = f"receiving from {api}"
        due = self._drained.pop(api, None)
        if due is not None and wait >= DRAINED_MIN_WAIT:
            # Empty when last seen, and every send since pushed a wake-up token: wait for one.
            block = max(min(end, due) - start, 0.01)
            with self._conn.op(doing, wait=block):
                await client.blpop([keys.wake], timeout=block)
        while True:
            promote = (
                anyio.current_time() - self._promoted.get(api, -math.inf) >= self.promote_every
            )
            if promote:
                self._promoted[api] = anyio.current_time()
            args = [*fixed, secrets.token_hex(8), "1" if promote else "", *extra()]
            with self._conn.op(doing):
                reply = await script(client, script_keys, args)
            if len(reply) > 1:
                wait_ms = int(reply[0])
                if wait_ms != -2:
                    now_ = anyio.current_time()
                    self._drained[api] = now_ + wait_ms / 1000 if wait_ms > 0 else math.inf
                return [reply[i : i + width] for i in range(1, len(reply), width)]
            remaining = end - anyio.current_time()
            if remaining <= 0:
                return []
            # Sleep on the wake list until a send, but no longer than until the next delayed
            # message is due or the next lease lapses (the script told us when).
            block = remaining if int(reply[0]) < 0 else min(remaining, int(reply[0]) / 1000)
            block = max(block, 0.01)  # BLPOP's 0 would mean "forever"
            with self._conn.op(doing, wait=block):
                await client.blpop([keys.wake], timeout=block)

    def ack_keys(self, api: str) -> list[str]:
        """The keys queue_ack.lua takes."""
        k = self._keys(api)
        return [k.leased, k.receipts, k.attempts, k.visible, k.ready]

    async def _holder_script(
        self, script: scripts.Script, delivery: Delivery, keys: list[str], *extra: str | int
    ) -> None:
        client = self._conn.client()
        doing = f"{script.name} of {delivery.request_id} in {delivery.api}"
        with self._conn.op(doing):
            held = await script(client, keys, [delivery.request_id, delivery.receipt, *extra])
        if not held:
            raise LeaseLost(
                f"request {delivery.request_id} of API {delivery.api}: the lease of attempt "
                f"{delivery.attempt} is gone (delivered again, acked or dead-lettered)"
            )

    async def extend(self, delivery: Delivery, lease: float) -> None:
        k = self._keys(delivery.api)
        await self._holder_script(
            scripts.QUEUE_EXTEND,
            delivery,
            [k.leased, k.receipts, k.visible, k.ready],
            max(1, _ms(lease)),
        )

    async def ack(self, delivery: Delivery) -> None:
        [acked] = await self.ack_many([delivery])
        if not acked:
            raise LeaseLost(
                f"request {delivery.request_id} of API {delivery.api}: the lease of attempt "
                f"{delivery.attempt} is gone (delivered again, acked or dead-lettered)"
            )

    async def ack_many(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """One ack script per API and :attr:`max_batch` deliveries (queue_ack.lua takes many)."""
        acked: dict[int, bool] = {}
        by_api: dict[str, list[int]] = {}
        for i, d in enumerate(deliveries):
            by_api.setdefault(d.api, []).append(i)
        client = self._conn.client()
        for api, indexes in by_api.items():
            keys = self.ack_keys(api)
            for start in range(0, len(indexes), self.max_batch):
                chunk = indexes[start : start + self.max_batch]
                args: list[bytes | str | int | float] = []
                for i in chunk:
                    args += [deliveries[i].request_id, deliveries[i].receipt]
                with self._conn.op(f"acking {len(chunk)} messages of {api}"):
                    reply = await scripts.QUEUE_ACK(client, keys, args)
                acked.update((i, bool(r)) for i, r in zip(chunk, reply, strict=True))
        return [acked[i] for i in range(len(deliveries))]

    async def release(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        k = self._keys(delivery.api)
        await self._holder_script(
            scripts.QUEUE_RELEASE,
            delivery,
            [k.leased, k.receipts, k.visible, k.delayed, k.wake, k.ready],
            _ms(delay),
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        k = self._keys(delivery.api)
        info = _dead_encoder.encode(_DeadInfo(reason, delivery.attempt, now())).decode()
        await self._holder_script(
            scripts.QUEUE_DEAD_LETTER,
            delivery,
            [k.leased, k.receipts, k.dead, k.dead_info, k.dead_seq, k.visible, k.ready],
            info,
        )

    async def list_dead(self, api: str, *, limit: int = 100) -> list[DeadLetter]:
        k = self._keys(api)
        if limit < 1:
            return []
        client = self._conn.client()
        with self._conn.op(f"listing dead letters of {api}"):
            rows = await scripts.QUEUE_LIST_DEAD(client, [k.dead, k.dead_info], [limit])
        letters = []
        for i in range(0, len(rows), 2):
            info = _dead_decoder.decode(rows[i + 1])
            letters.append(
                DeadLetter(api, _text(rows[i]), info.reason, info.attempts, info.dead_at)
            )
        return letters

    async def requeue_dead(self, api: str, request_ids: Sequence[str] | None = None) -> int:
        k = self._keys(api)
        ids = [validate_request_id(i) for i in request_ids] if request_ids is not None else []
        if request_ids is not None and not ids:
            return 0
        client = self._conn.client()
        with self._conn.op(f"requeueing dead letters of {api}"):
            return int(
                await scripts.QUEUE_REQUEUE_DEAD(
                    client, [k.visible, k.dead, k.dead_info, k.wake], list(ids)
                )
            )

    async def purge_dead(self, api: str) -> int:
        k = self._keys(api)
        client = self._conn.client()
        with self._conn.op(f"purging dead letters of {api}"):
            return int(
                await scripts.QUEUE_PURGE_DEAD(
                    client, [k.dead, k.dead_info, k.attempts, k.dead_seq], []
                )
            )

    async def depth(self, api: str) -> QueueDepth:
        k = self._keys(api)
        client = self._conn.client()
        with self._conn.op(f"reading the depth of {api}"):
            queued, in_flight, dead, delayed = await scripts.QUEUE_DEPTH(
                client, [k.visible, k.delayed, k.leased, k.dead, k.ready], []
            )
        return QueueDepth(
            queued=int(queued), in_flight=int(in_flight), dead=int(dead), delayed=int(delayed)
        )

    async def ping(self) -> None:
        client = self._conn.client()
        with self._conn.op("ping"):
            await client.ping()

    async def aclose(self) -> None:
        await self._conn.aclose()
