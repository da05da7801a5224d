"""``with`` and ``async with`` for objects that hold connections: one definition of the
context-manager boilerplate, instead of a copy in every class.

A class defines :meth:`AsyncClosing.aclose` (or :meth:`Closing.close`) and inherits the rest;
one whose ``__aenter__`` must do work (open a session, start a task) overrides only that.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncClosing", "Closing"]


class AsyncClosing:
    """``async with obj:`` returns ``obj`` and awaits ``obj.aclose()`` at the end."""

    async def aclose(self) -> None:
        """Release connections; the object is unusable afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Closing:
    """``with obj:`` returns ``obj`` and calls ``obj.close()`` at the end."""

    def close(self) -> None:
        """Release connections; the object is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
