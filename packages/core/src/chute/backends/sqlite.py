"""The embedded default backend: queue and store in one SQLite file, ``sqlite:///path.db``.

It is a plugin like any other: core's ``pyproject.toml`` has the entry point
``sqlite = "chute.backends.sqlite"`` in group ``chute``, and this module implements the
``chute_register_backends`` hook. ``sqlite:///relative/path.db`` is relative to the working
directory; ``sqlite:////absolute/path.db`` is absolute. The parent directory is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chute.errors import ConfigError
from chute.hookspecs import hookimpl

if TYPE_CHECKING:
    from chute.backends.base import Queue, Store
    from chute.config import API
    from chute.registry import BackendRegistry

SCHEME = "sqlite"


def open_queue(url: str) -> Queue:
    """A :class:`~chute.backends.sqlite_queue.SqliteQueue` for ``url``."""
    from chute.backends.sqlite_queue import SqliteQueue

    return SqliteQueue(url)


def open_store(url: str) -> Store:
    """A :class:`~chute.backends.sqlite_store.SqliteStore` for ``url``."""
    from chute.backends.sqlite_store import SqliteStore

    return SqliteStore(url)


@hookimpl
def chute_register_backends(registry: BackendRegistry) -> None:
    registry.add_queue(SCHEME, open_queue)
    registry.add_store(SCHEME, open_store)


@hookimpl
def chute_keda_trigger(queue_url: str, api: API) -> dict[str, object] | None:
    """The embedded backend is one file on one machine: it cannot scale pods on a cluster."""
    if not queue_url.lower().startswith(f"{SCHEME}:"):
        return None
    from chute.install import install_line

    raise ConfigError(
        f"API {api.name!r}: the queue {queue_url!r} is the embedded SQLite backend, a file on "
        "one machine that pods on a cluster cannot share, so it cannot be autoscaled there; "
        f"use a networked queue such as redis:// ({install_line('redis')}) or sqs:// "
        f"({install_line('sqs')}) in the cluster file"
    )
