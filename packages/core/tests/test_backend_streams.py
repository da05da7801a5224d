"""limited_pieces: exact pieces, one last piece, the limit enforced before bytes are passed on,
and never more than one piece held."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable

import pytest

from chute.backends.streams import Piece, limited_pieces
from chute.errors import PayloadTooLarge

pytestmark = pytest.mark.anyio


async def stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def pieces(
    chunks: Iterable[bytes], *, piece_size: int, limit: int | None = None
) -> list[Piece]:
    return [p async for p in limited_pieces(stream(chunks), limit=limit, piece_size=piece_size)]


def split(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    out, start = [], 0
    for size in sizes:
        out.append(data[start : start + size])
        start += size
    out.append(data[start:])
    return out


@pytest.mark.parametrize(
    ("total", "chunk_sizes"),
    [
        (0, []),
        (1, []),
        (7, [3, 0, 2]),
        (10, []),  # exactly one piece
        (10, [5]),
        (20, [10]),  # exactly two pieces, chunk-aligned
        (23, [1, 1, 1, 15]),
        (95, [33, 33]),  # chunks larger than a piece
        (100, [7] * 14),
    ],
)
async def test_pieces_rebuild_the_body(total: int, chunk_sizes: list[int]) -> None:
    data = os.urandom(total)
    got = await pieces(split(data, chunk_sizes), piece_size=10)
    assert b"".join(p.data for p in got) == data
    assert [p.last for p in got] == [False] * (len(got) - 1) + [True]
    assert all(len(p.data) == 10 for p in got[:-1])
    assert 0 < len(got[-1].data) <= 10 or total == 0
    assert [p.offset for p in got] == [10 * i for i in range(len(got))]
    assert got[-1].end == total
    assert len(got) == max(1, -(-total // 10))


async def test_an_empty_body_is_one_empty_last_piece() -> None:
    assert await pieces([], piece_size=4) == [Piece(b"", 0, last=True)]
    assert await pieces([b"", b""], piece_size=4) == [Piece(b"", 0, last=True)]


async def test_a_chunk_of_exactly_one_piece_is_not_copied() -> None:
    chunk = os.urandom(8)
    got = await pieces([chunk, b"tail"], piece_size=8)
    assert got[0].data is chunk
    assert got[1] == Piece(b"tail", 8, last=True)


async def test_mutable_chunks_are_taken_as_they_were() -> None:
    buffer = bytearray(b"abcd")

    async def reusing() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield buffer  # type: ignore[misc]  # an untyped caller that refills one buffer
            buffer[:] = b"wxyz"

    got = [p async for p in limited_pieces(reusing(), limit=None, piece_size=6)]
    assert b"".join(p.data for p in got) == b"abcdwxyzwxyz"


async def test_the_limit_is_enforced_before_the_bytes_are_passed_on() -> None:
    seen: list[Piece] = []

    async def consume() -> None:
        body = stream([b"a" * 8, b"b" * 8, b"c"])
        async for piece in limited_pieces(body, limit=16, piece_size=4):
            seen.append(piece)

    with pytest.raises(PayloadTooLarge) as caught:
        await consume()
    assert caught.value.limit == 16
    # The pieces before the chunk that crossed the limit, and none of its bytes.
    assert b"".join(p.data for p in seen) == b"a" * 8 + b"b" * 4
    assert not any(p.last for p in seen)


async def test_a_body_of_exactly_the_limit_passes() -> None:
    got = await pieces([b"x" * 16], piece_size=4, limit=16)
    assert got[-1].end == 16


async def test_at_most_one_piece_is_held() -> None:
    """The generator reads the next chunk only after it hands on the previous full piece: a
    body of many small chunks is never buffered beyond one piece (+ the current chunk)."""
    read = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(100):
            read += 3
            yield b"123"

    async for piece in limited_pieces(counting(), limit=None, piece_size=30):
        # Bytes read but not yet passed on: at most one piece plus one chunk.
        assert read - piece.end <= 30 + 3


async def test_a_bad_piece_size_is_refused() -> None:
    with pytest.raises(ValueError, match="piece_size"):
        await pieces([b"x"], piece_size=0)
