"""A request body cut into fixed-size pieces, counted against the store's payload limit.

Every store's ``create`` does the same with the body it is handed: count the bytes, refuse more
than ``max_payload_size`` (PayloadTooLarge), and write the body in pieces its service accepts
(multipart parts, upload chunks, rows), without ever holding the whole body. Most also need to
know which piece is the last, before sending it: a payload that fits in one piece goes in one
simple write, and the final part of a multipart or resumable upload is sent differently.
:func:`limited_pieces` does all of that once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass

from chute.errors import PayloadTooLarge

__all__ = ["Piece", "limited_pieces"]


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a body: its bytes, where they start, and whether it is the last."""

    data: bytes
    #: Bytes of the body before this piece.
    offset: int
    #: No bytes follow; ``end`` is the body's size. Exactly one piece is the last.
    last: bool

    @property
    def end(self) -> int:
        """Bytes of the body up to the end of this piece (the body's size if ``last``)."""
        return self.offset + len(self.data)


async def limited_pieces(
    body: AsyncIterable[bytes], *, limit: int | None, piece_size: int
) -> AsyncGenerator[Piece, None]:
    """Re-chunk ``body`` into pieces of exactly ``piece_size`` bytes, all but the last.

    The last piece (``last=True``) holds the remaining 1..``piece_size`` bytes, and is empty only
    when the whole body is; so there is always exactly one last piece, and a body of
    ``piece_size`` bytes or fewer is one piece. Raises PayloadTooLarge(limit) as soon as the
    bytes read exceed ``limit`` (None: no limit), before yielding any of them.

    Memory: one piece, plus the chunk the body just produced. A full piece is yielded only
    once the next chunk shows it is not the last, so it is held back until then. Bytes are
    copied once, from the body's chunks into the piece (a chunk that is exactly one piece is
    passed on uncopied).

    Use it under ``contextlib.aclosing(...)`` so that stopping early (an error in the loop's
    body) closes it at once, as with any async generator.
    """
    if piece_size <= 0:
        raise ValueError(f"piece_size must be positive, not {piece_size}")
    # Views on the chunks that make up the piece being filled; joined (one copy) when full.
    parts: list[memoryview] = []
    filled = 0
    full: bytes | None = None  # a whole piece, waiting to learn whether more bytes follow
    offset = size = 0
    async for chunk in body:
        if not chunk:
            continue
        size += len(chunk)
        if limit is not None and size > limit:
            raise PayloadTooLarge(limit)
        if type(chunk) is not bytes:
            chunk = bytes(chunk)  # a mutable buffer could change under the views we keep
        view = memoryview(chunk)
        while view:
            if full is not None:  # more bytes came: the held piece is not the last
                yield Piece(full, offset, last=False)
                offset += len(full)
                full = None
            take = min(piece_size - filled, len(view))
            if filled == 0 and take == piece_size == len(chunk):  # exactly a piece: no copy
                full, view = chunk, view[take:]
                continue
            parts.append(view[:take])
            filled += take
            view = view[take:]
            if filled == piece_size:
                full = b"".join(parts)
                parts.clear()
                filled = 0
    if full is not None:
        yield Piece(full, offset, last=True)
    else:
        yield Piece(b"".join(parts), offset, last=True)
