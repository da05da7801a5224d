"""Small helpers shared by the GCS store's tests (a module name of its own, so that it never
clashes with another suite's ``conftest``)."""

from __future__ import annotations

from urllib.parse import urlencode


def gs_url(bucket: str, prefix: str, endpoint: str, **params: str) -> str:
    """A ``gs://`` store URL on the emulator at ``endpoint``."""
    return f"gs://{bucket}/{prefix}?{urlencode({'endpoint_url': endpoint, **params})}"
