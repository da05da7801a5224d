"""Small helpers shared by the Redis tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chute.backends.base import DEFAULT_RETENTION
from chute.protocol import RequestRecord, Status, new_request_id, now


def new_record(api: str = "demo", retention: float = DEFAULT_RETENTION) -> RequestRecord:
    created = now()
    return RequestRecord(
        id=new_request_id(),
        api=api,
        status=Status.IN_QUEUE,
        created_at=created,
        expires_at=created + retention,
        content_type="application/json",
    )


async def body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
