"""The lease book moved to core (``chute.backends.leases``), shared with the Pub/Sub queue."""

from chute.backends.leases import MAX_TRACKED, LeaseBook, LeaseState

__all__ = ["MAX_TRACKED", "LeaseBook", "LeaseState"]
