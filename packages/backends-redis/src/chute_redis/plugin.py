"""chute's plugin entry point for Redis (group ``chute``, name ``redis``).

Registers the ``redis`` and ``rediss`` (TLS) schemes for both roles. redis-py is imported by
the factories, on first use, so that loading the plugin costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chute import hookimpl
from chute_redis.keda import chute_keda_trigger  # the KEDA trigger hook, registered from here

__all__ = ["chute_keda_trigger", "chute_register_backends", "open_queue", "open_store"]

if TYPE_CHECKING:
    from chute.backends.base import Queue, Store
    from chute.registry import BackendRegistry

SCHEMES = ("redis", "rediss")


def open_queue(url: str) -> Queue:
    """A Redis queue for ``url`` (``redis://[[user]:password@]host[:port][/db][?prefix=…]``)."""
    from chute_redis.queue import RedisQueue

    return RedisQueue(url)


def open_store(url: str) -> Store:
    """A Redis store for ``url``."""
    from chute_redis.store import RedisStore

    return RedisStore(url)


@hookimpl
def chute_register_backends(registry: BackendRegistry) -> None:
    for scheme in SCHEMES:
        registry.add_queue(scheme, open_queue)
        registry.add_store(scheme, open_store)
