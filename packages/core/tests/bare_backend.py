"""A queue with the least a backend may offer: the embedded SQLite queue declaring no dead
letter and no depth, served as ``bare:///path`` by a plugin registered in the test process. It
checks that the contract suite, the gateway and the CLI read capabilities from the backend."""

from __future__ import annotations

from chute.backends._sqlite.queue import SqliteQueue
from chute.backends.base import Queue
from chute.hookspecs import hookimpl
from chute.registry import BackendRegistry, plugin_manager


class BareSqliteQueue(SqliteQueue):
    """Its dead-letter methods and ``depth`` are the base class's, which raise Unsupported."""

    supports_dead_letter = False
    supports_depth = False
    dead_letter = Queue.dead_letter
    list_dead = Queue.list_dead
    requeue_dead = Queue.requeue_dead
    purge_dead = Queue.purge_dead
    depth = Queue.depth


class BarePlugin:
    """Serves ``bare:///path`` (the SQLite file at ``path``) with :class:`BareSqliteQueue`."""

    @hookimpl
    def chute_register_backends(self, registry: BackendRegistry) -> None:
        registry.add_queue("bare", lambda url: BareSqliteQueue(url.replace("bare:", "sqlite:", 1)))


def register_bare() -> None:
    """Register :class:`BarePlugin` in the process-wide plugin manager (once)."""
    manager = plugin_manager()
    if manager.get_plugin("bare") is None:
        manager.register(BarePlugin(), "bare")
