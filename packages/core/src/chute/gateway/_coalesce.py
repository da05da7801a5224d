"""Submits that arrive together go to the backend together.

On the joint path (queue and store in one place), a submit whose body is small is read whole
and handed to a group commit of :meth:`~chute.backends.base.Joint.submit_many`: the first
submit goes at once, alone, and the submits that arrive while a call is on its way share the
next one. Each gets its own answer (its stored record, or the error it alone would have got:
``Conflict``, ``PayloadTooLarge``; an outage fails every submit of that call, as it would
have failed each). A larger body streams through :meth:`Joint.submit` as before, never whole
in memory.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from weakref import WeakKeyDictionary

from chute.backends.base import Joint, Submit
from chute.backends.batching import GroupCommit
from chute.errors import ChuteError
from chute.protocol import RequestRecord

#: Bodies up to this size are read whole and may share a backend call with other submits.
COALESCE_LIMIT = 64 * 1024

_Answer = RequestRecord | ChuteError
_commits: WeakKeyDictionary[Joint, GroupCommit[Submit, _Answer]] = WeakKeyDictionary()


async def submit(joint: Joint, record: RequestRecord, body: AsyncIterator[bytes]) -> RequestRecord:
    """:meth:`Joint.submit`, coalesced with concurrent submits when the body is small."""
    if joint.max_batch <= 1:
        return await joint.submit(record, body)
    held: list[bytes] = []
    size = 0
    async for chunk in body:
        held.append(chunk)
        size += len(chunk)
        if size > COALESCE_LIMIT:
            return await joint.submit(record, _chain(held, body))
    commit = _commits.get(joint)
    if commit is None:
        commit = _commits[joint] = GroupCommit(_runner(joint), joint.max_batch)
    answer = await commit(Submit(record, b"".join(held)))
    if isinstance(answer, ChuteError):
        raise answer
    return answer


def _runner(joint: Joint) -> Callable[[Sequence[Submit]], Awaitable[list[_Answer]]]:
    # A weak reference: the cache above keys on the joint weakly, its value must not hold it.
    held = weakref.ref(joint)

    async def run(items: Sequence[Submit]) -> list[_Answer]:
        alive = held()
        if alive is None:  # pragma: no cover - a caller holds the joint while it submits
            raise RuntimeError("the joint path is gone")
        return await alive.submit_many(items)

    return run


async def _chain(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in held:
        yield chunk
    async for chunk in rest:
        yield chunk
