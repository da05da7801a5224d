"""One-off HTTP requests from tests, as ``httpx.get(url)`` makes them but without its cost.

``httpx.get`` builds a new client for each call, and a client loads the system's CA
certificates into a new SSL context even for ``http://`` URLs: ~30 ms of CPU per call, so a
test polling a gateway every 20 ms spent most of a core on it, in the very seconds the
processes it waits for were starting. :func:`http` is one client per thread, made once; like
``httpx.get`` it opens a new connection for every request (it keeps none alive), so a test sees
exactly what a fresh client would: a restarted or killed server, a refused connection, a
gateway's drain.
"""

from __future__ import annotations

import threading

import httpx

_local = threading.local()


def http() -> httpx.Client:
    """This thread's client for one-off requests (``http().get(url, timeout=5)``)."""
    client: httpx.Client | None = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    return client
