"""chute-dequeuer: the sidecar that feeds an Async API's queue to the user's container.

Run it as ``chute-dequeuer --api-file api.yaml --api NAME`` (see docs/dequeuer.md).
"""

from chute._version import __version__

__all__ = ["__version__"]
