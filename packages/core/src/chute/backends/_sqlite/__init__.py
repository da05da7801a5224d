"""The embedded default backend: queue and store in one SQLite file, ``sqlite:///path.db``.

It is a plugin like any other: core's ``pyproject.toml`` has the entry point
``sqlite = "chute.backends._sqlite"`` in group ``chute``, and this module implements the
``chute_register_backends`` hook. ``sqlite:///relative/path.db`` is relative to the working
directory; ``sqlite:////absolute/path.db`` is absolute. The parent directory is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chute.hookspecs import hookimpl

if TYPE_CHECKING:
    from chute.backends.base import Queue, Store
    from chute.registry import BackendRegistry

SCHEME = "sqlite"


def open_queue(url: str) -> Queue:
    """A :class:`~chute.backends._sqlite.queue.SqliteQueue` for ``url``."""
    from chute.backends._sqlite.queue import SqliteQueue

    return SqliteQueue(url)


def open_store(url: str) -> Store:
    """A :class:`~chute.backends._sqlite.store.SqliteStore` for ``url``."""
    from chute.backends._sqlite.store import SqliteStore

    return SqliteStore(url)


@hookimpl
def chute_register_backends(registry: BackendRegistry) -> None:
    registry.add_queue(SCHEME, open_queue)
    registry.add_store(SCHEME, open_store)
