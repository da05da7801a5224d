"""chute's plugin entry point for Google Cloud Storage (group ``chute``, name ``gcs``).

Registers the ``gs`` scheme for the store role only (GCS is no queue: pair it with ``redis://``
or another queue). aiohttp and gcloud-aio-auth are imported by the factory, on first use, so
that loading the plugin costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chute import hookimpl

if TYPE_CHECKING:
    from chute.backends.base import Store
    from chute.registry import BackendRegistry

SCHEME = "gs"


def open_store(url: str) -> Store:
    """A GCS store for ``url`` (``gs://bucket[/prefix][?project=…&endpoint_url=…]``)."""
    from chute_gcs.store import GcsStore

    return GcsStore(url)


@hookimpl
def chute_register_backends(registry: BackendRegistry) -> None:
    registry.add_store(SCHEME, open_store)
