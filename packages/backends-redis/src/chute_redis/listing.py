"""The listing index of the Redis store (:meth:`RedisStore.list_requests`).

Each API's requests are indexed in sorted sets ``<prefix>:s:<api>:index:<span>``, scored by
``created_at`` (seconds, a double: exact), the request id as the member. Redis orders equal
scores by member, so ``ZREVRANGEBYSCORE`` walks the listing order, newest first by
``(created_at, id)``, as :mod:`chute.backends.listing` defines it.

A request goes in the index of its *span*: its lifetime (``expires_at - created_at``) rounded
up to a power of two seconds. Every member of one index therefore lives at most ``span``
seconds after its score, so the members scored before ``now - span`` are all expired and one
``ZREMRANGEBYSCORE`` trims them in bulk, exactly, whatever the retentions of other requests of
the API. An API normally has one span (its retention); tombstones and per-test retentions add a
few. The create script writes the entry (one ``ZADD``) and, on one create in
:data:`TRIM_EVERY` per index and process, trims that index; a listing trims every index it
reads. An index trimmed empty is deleted by Redis, so the index expires with its records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chute.backends.base import RequestPage
from chute.backends.listing import Position, check_limit, decode_cursor, page_of
from chute.protocol import RequestRecord, Status, now, record_decoder

if TYPE_CHECKING:
    from chute_redis.store import RedisStore

#: The longest span indexed apart: 2**40 s (~35,000 years); longer lifetimes share it.
MAX_SPAN_EXPONENT = 40
#: One create in this many (per index, per process) trims the index it writes.
TRIM_EVERY = 16


def span_of(record: RequestRecord) -> int:
    """The index span of ``record``: its lifetime rounded up to a power of two seconds."""
    lifetime = record.expires_at - record.created_at
    exponent = 0 if lifetime <= 1 else math.ceil(math.log2(lifetime))
    return 1 << min(exponent, MAX_SPAN_EXPONENT)


def index_key(record_prefix: str, span: int) -> str:
    """The index of the requests of one span (``record_prefix`` is ``<prefix>:s:<api>:``)."""
    return f"{record_prefix}index:{span}"


def every_index(record_prefix: str) -> list[tuple[str, int]]:
    """Every index an API may have, with its span."""
    spans = [1 << e for e in range(MAX_SPAN_EXPONENT + 1)]
    return [(index_key(record_prefix, span), span) for span in spans]


async def list_requests(
    store: RedisStore,
    api: str,
    *,
    status: Status | None,
    limit: int,
    cursor: str | None,
) -> RequestPage:
    """One page of ``api``'s requests, read from its indexes (see the module's docstring)."""
    check_limit(limit)
    after = decode_cursor(cursor) if cursor is not None else None
    at = now()
    prefix = store.record_prefix(api)
    conn = store.connection
    client = conn.client()
    doing = f"listing the requests of {api}"
    # Trim every index, then keep those that hold anything.
    indexes = every_index(prefix)
    with conn.op(doing):
        async with client.pipeline(transaction=False) as pipe:
            for key, span in indexes:
                pipe.zremrangebyscore(key, "-inf", f"({at - span!r}")
                pipe.exists(key)
            replies = await pipe.execute()
    live = [key for (key, _), exists in zip(indexes, replies[1::2], strict=True) if exists]
    # Walk the union of the indexes newest first, a chunk at a time, reading each candidate's
    # record, until the page and one more matching record are found or the indexes end.
    chunk = min(limit + 1 if status is None else 4 * (limit + 1), 1000)
    bound: Position | None = after
    candidates: list[RequestRecord] = []
    matching = 0
    gone: list[tuple[str, str]] = []
    while live:
        fetch = chunk
        while True:
            with conn.op(doing):
                async with client.pipeline(transaction=False) as pipe:
                    for key in live:
                        top = "+inf" if bound is None else repr(bound.created_at)
                        pipe.zrevrangebyscore(key, top, "-inf", start=0, num=fetch, withscores=True)
                    rows = await pipe.execute()
            merged: list[tuple[float, str, str]] = []
            ends = []
            for key, row in zip(live, rows, strict=True):
                ends.append(len(row) < fetch)
                for member, score in row:
                    rid = member.decode() if isinstance(member, bytes) else member
                    if bound is None or Position(score, rid) < bound:
                        merged.append((score, rid, key))
            # Equal scores at the bound, all seen already, may fill a whole fetch: fetch more.
            if merged or all(ends):
                break
            fetch *= 2
        merged.sort(reverse=True)
        taken = merged[:chunk]
        exhausted = all(ends) and len(merged) <= chunk
        if not taken:
            break
        with conn.op(doing):
            async with client.pipeline(transaction=False) as pipe:
                for _, rid, _ in taken:
                    pipe.hget(f"{prefix}{{{rid}}}", "record")
                raws = await pipe.execute()
        for (_, rid, key), raw in zip(taken, raws, strict=True):
            if raw is None:
                gone.append((key, rid))
                continue
            record: RequestRecord = record_decoder.decode(raw)
            candidates.append(record)
            if record.expires_at > at and (status is None or record.status is status):
                matching += 1
        if matching > limit or exhausted:
            break
        bound = Position(taken[-1][0], taken[-1][1])
    if gone:  # deleted or expired since: out of the index
        await _forget(store, gone)
    return page_of(candidates, status=status, limit=limit, cursor=cursor, at=at)


async def _forget(store: RedisStore, gone: Sequence[tuple[str, str]]) -> None:
    conn = store.connection
    client = conn.client()
    with conn.op("trimming the listing index"):
        async with client.pipeline(transaction=False) as pipe:
            for key, rid in gone:
                pipe.zrem(key, rid)
            await pipe.execute()
