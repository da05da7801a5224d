"""Listing an API's recent requests (:meth:`chute.backends.base.Store.list_requests`): the order,
the cursor and the paging every backend that declares ``supports_listing`` shares.

The order is newest first by ``(created_at, id)``; a cursor names the last record of a page by
that pair, so the next page starts strictly after it whatever moved meanwhile. A backend fetches
candidates in that order from its own index (a SQL ``ORDER BY``, a Redis sorted set) and lets
:func:`page_of` apply the rules (live records only, the status filter, the cursor, the limit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from chute.backends.base import RequestPage
from chute.errors import ProtocolError
from chute.protocol import RequestRecord, Status, now, validate_request_id

#: The most records one page may hold.
MAX_PAGE = 500

_SEPARATOR = "~"


class Position(NamedTuple):
    """Where a record sits in the listing order; a cursor names one."""

    created_at: float
    request_id: str


def position(record: RequestRecord) -> Position:
    return Position(record.created_at, record.id)


def encode_cursor(record: RequestRecord) -> str:
    """The cursor of the page that follows ``record``."""
    return f"{record.created_at!r}{_SEPARATOR}{record.id}"


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; ProtocolError if it is not one :func:`encode_cursor` made."""
    created, sep, request_id = cursor.partition(_SEPARATOR)
    try:
        if not sep:
            raise ValueError
        return Position(float(created), validate_request_id(request_id))
    except (ValueError, ProtocolError):
        raise ProtocolError(f"invalid listing cursor {cursor!r}") from None


def check_limit(limit: int) -> int:
    """``limit`` if it is a valid page size, else ProtocolError."""
    if not 1 <= limit <= MAX_PAGE:
        raise ProtocolError(f"a page holds 1 to {MAX_PAGE} requests, not {limit}")
    return limit


def page_of(
    candidates: Iterable[RequestRecord],
    *,
    status: Status | None,
    limit: int,
    cursor: str | None,
    at: float | None = None,
) -> RequestPage:
    """One page from ``candidates`` (records of one API in any order, possibly more than a page):
    live at ``at`` (default now), in ``status`` if given, after ``cursor``, newest first, at
    most ``limit``; the page's cursor is set only when more matching records follow."""
    check_limit(limit)
    after = decode_cursor(cursor) if cursor is not None else None
    at = now() if at is None else at
    matching = sorted(
        (
            r
            for r in candidates
            if r.expires_at > at
            and (status is None or r.status is status)
            and (after is None or position(r) < after)
        ),
        key=position,
        reverse=True,
    )
    records = matching[:limit]
    more = len(matching) > limit
    return RequestPage(records, encode_cursor(records[-1]) if more else None)
