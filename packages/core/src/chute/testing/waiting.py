"""Waiting for something another process or task does: poll a check until it holds, and fail
with a message that names what never happened."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import anyio

T = TypeVar("T")

#: How long :func:`eventually` waits unless told otherwise (a busy 2-core CI machine).
DEFAULT_TIMEOUT = 30.0


def eventually(
    check: Callable[[], T | Literal[False] | None],
    what: str = "the condition",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
) -> T:
    """Call ``check`` until it returns something truthy and return that; raise AssertionError
    naming ``what`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], T | Literal[False] | Awaitable[T | Literal[False] | None] | None],
    what: str = "the condition",
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (a deadline of its own, as for eventually)
    interval: float = 0.02,
) -> T:
    """:func:`eventually` for async tests: sleeps without blocking the event loop, and
    ``check`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await anyio.sleep(interval)
