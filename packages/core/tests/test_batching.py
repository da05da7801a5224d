"""Group commit (chute.backends.batching): a lone call goes at once and alone; calls that
arrive while a batch is in flight go together in the next one; each gets its own answer."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from chute.backends.batching import GroupCommit

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = anyio.Event()
        self.hold = False

    async def run(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if self.hold:
            await self.gate.wait()
        if 13 in items:
            raise ValueError("unlucky batch")
        return [i * 10 for i in items]


async def test_a_lone_call_runs_at_once_alone() -> None:
    rec = Recorder()
    commit = GroupCommit(rec.run, max_batch=8)
    with anyio.fail_after(5):
        assert await commit(1) == 10
        assert await commit(2) == 20
    assert rec.batches == [[1], [2]]


async def test_calls_arriving_during_a_batch_go_together_bounded() -> None:
    rec = Recorder()
    rec.hold = True
    commit = GroupCommit(rec.run, max_batch=3)
    answers: dict[int, int] = {}

    async def call(i: int) -> None:
        answers[i] = await commit(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 0)
            await anyio.wait_all_tasks_blocked()  # 0 is in flight, alone
            for i in range(1, 6):
                tg.start_soon(call, i)
            await anyio.wait_all_tasks_blocked()
            rec.gate.set()
    assert answers == {i: i * 10 for i in range(6)}
    assert rec.batches == [[0], [1, 2, 3], [4, 5]]


async def test_calls_ready_in_the_same_pass_of_the_loop_share_the_first_batch() -> None:
    """Workers woken by one burst of answers call together: the first does not leave alone
    (it lets the tasks that are ready now add their items), so one call carries them all."""
    rec = Recorder()
    commit = GroupCommit(rec.run, max_batch=8)
    answers: dict[int, int] = {}

    async def call(i: int) -> None:
        answers[i] = await commit(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(call, i)
    assert answers == {i: i * 10 for i in range(5)}
    assert rec.batches == [[0, 1, 2, 3, 4]]


async def test_a_failed_batch_fails_its_callers_only() -> None:
    rec = Recorder()
    rec.hold = True
    commit = GroupCommit(rec.run, max_batch=2)
    outcome: dict[int, object] = {}

    async def call(i: int) -> None:
        try:
            outcome[i] = await commit(i)
        except ValueError as exc:
            outcome[i] = exc

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 0)
            await anyio.wait_all_tasks_blocked()
            for i in (13, 1, 2):
                tg.start_soon(call, i)
            await anyio.wait_all_tasks_blocked()
            rec.gate.set()
    assert rec.batches == [[0], [13, 1], [2]]
    assert isinstance(outcome[13], ValueError)
    assert isinstance(outcome[1], ValueError)
    assert outcome[0] == 0
    assert outcome[2] == 20


async def test_a_waiter_cancelled_before_its_batch_is_never_sent() -> None:
    rec = Recorder()
    rec.hold = True
    commit = GroupCommit(rec.run, max_batch=8)
    answers: dict[int, int] = {}

    async def call(i: int) -> None:
        answers[i] = await commit(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, 0)
            await anyio.wait_all_tasks_blocked()
            with anyio.CancelScope() as scope:
                scope.cancel()
                await commit(7)  # queued behind 0, then cancelled: never sent
            tg.start_soon(call, 8)
            await anyio.wait_all_tasks_blocked()
            rec.gate.set()
    assert rec.batches == [[0], [8]]
    assert answers == {0: 0, 8: 80}
