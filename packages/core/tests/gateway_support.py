"""Helpers shared by core's gateway and client tests: the API files they serve, a Redis URL of
their own, and an in-process gateway under hypercorn. Fixtures built on these are in
conftest.py; this module has a name of its own so that it never clashes with another package's
``conftest``."""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import pytest

from chute import open_queue
from chute.gateway import Gateway, serve
from chute.testing.services import FoundService, unavailable

#: One API, ``hello``, on its default endpoint.
HELLO_API = """\
- name: hello
  kind: AsyncAPI
  pod:
    containers:
      - name: api
        image: hello:latest
"""

#: ``hello`` plus ``other`` on an endpoint of its own.
HELLO_AND_OTHER_APIS = (
    HELLO_API
    + """\
- name: other
  kind: AsyncAPI
  networking:
    endpoint: /v1/other
  pod:
    containers:
      - name: api
        image: other:latest
"""
)


def run(fn: Any, *args: Any) -> Any:
    """Run one coroutine function against the backends (they are async)."""
    return anyio.run(fn, *args)


def queued(url: str, api: str) -> int:
    """How many of ``api``'s requests wait in the queue at ``url``."""

    async def depth() -> int:
        async with open_queue(url) as queue:
            return (await queue.depth(api)).queued

    count: int = run(depth)
    return count


def backend_url(request: pytest.FixtureRequest, sqlite_dir: Path, prefix: str) -> Iterator[str]:
    """Yield the queue and store URL for ``request.param``: a SQLite file in ``sqlite_dir``, or
    database 13 of the test Redis under a fresh ``prefix-…`` key prefix, whose keys (ours only)
    are deleted afterwards. Use with ``yield from`` in a parametrised fixture."""
    if request.param == "sqlite":
        yield f"sqlite:///{sqlite_dir / 'chute.db'}"
        return
    if importlib.util.find_spec("chute_redis") is None:
        unavailable("the Redis backend (chute-redis) is not installed")
    service: FoundService = request.getfixturevalue("redis_service")
    parts = urlsplit(service.url)
    key_prefix = f"{prefix}-{secrets.token_hex(6)}"
    query = urlencode({**dict(parse_qsl(parts.query)), "prefix": key_prefix})
    yield urlunsplit(parts._replace(path="/13", query=query))
    import redis

    client = redis.Redis.from_url(urlunsplit(parts._replace(path="/13", query="")))
    try:
        keys = list(client.scan_iter(match=f"{key_prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@asynccontextmanager
async def serving(app: Gateway) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn on a free port; yield its URL; stop gracefully."""
    stop = anyio.Event()
    listening = anyio.Event()
    urls: list[str] = []

    def on_listening(url: str) -> None:
        urls.append(url)
        listening.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            partial(
                serve,
                app,
                port=0,
                on_listening=on_listening,
                shutdown_trigger=stop.wait,
                graceful_timeout=5,
            )
        )
        await listening.wait()
        try:
            yield urls[0]
        finally:
            stop.set()
