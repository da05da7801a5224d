"""Backend interfaces (``chute.backends.base``) and the embedded SQLite backend."""

from chute.backends.base import DeadLetter, Delivery, Queue, QueueDepth, Store

__all__ = ["DeadLetter", "Delivery", "Queue", "QueueDepth", "Store"]
