"""Fixtures for the dequeuer's tests: every part is real (see dequeuer_harness.py).

* the user container is ``chute.testing.echo`` served by uvicorn in its own process;
* the queue and the store are one SQLite file in the test's tmp directory;
* the dequeuer is ``python -m chute_dequeuer`` in its own process, its JSON log lines collected;
* requests are submitted by writing the record and payload through ``chute.open_store`` and
  the message through ``chute.open_queue``, as the gateway does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from dequeuer_harness import API, Backend, Container, Dequeuer, write_api_file

#: The Redis database these tests use on a shared server (keys under a unique prefix).
REDIS_DB = 12


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    """One always-ready container shared by a module's tests (they use distinct ids)."""
    c = Container()
    yield c
    c.stop()


@pytest.fixture
def container_factory() -> Iterator[Callable[..., Container]]:
    """Containers of the test's own (gated on a file, or crashing)."""
    started: list[Container] = []

    def start(ready_file: Path | None = None) -> Container:
        c = Container(ready_file)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chute.db'}"


@pytest.fixture
def start_dequeuer(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Dequeuer]]:
    """``start_dequeuer(port, *flags)`` runs a dequeuer for the container on ``port`` and
    waits for its admin server; every one still running is stopped at the end."""
    running: list[Dequeuer] = []

    def start(port: int, *flags: str, max_concurrency: int = 1, api_extra: str = "") -> Dequeuer:
        api_file = write_api_file(
            tmp_path / f"api-{len(running)}.yaml",
            port,
            max_concurrency=max_concurrency,
            extra=api_extra,
        )
        args = ["--api-file", str(api_file), "--api", API, "--queue", db_url, "--store", db_url]
        args += ["--admin-port", "0", "--admin-host", "127.0.0.1", *flags]
        d = Dequeuer(args)
        running.append(d)
        return d.started()

    yield start
    for d in running:
        d.stop()


@pytest.fixture
async def backend(db_url: str) -> AsyncIterator[Backend]:
    b = Backend(db_url)
    yield b
    await b.aclose()


@pytest.fixture(params=["sqlite", "redis"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Both backends the issue-5 tests run on: an SQLite file, and Redis (database 12, a key
    prefix of the test's own, deleted afterwards). Use it as ``db_url`` in a test module."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chute.db'}"
        return
    import redis

    service = request.getfixturevalue("redis_service")
    parts = urlsplit(service.url)
    base = f"redis://{parts.hostname}:{parts.port or 6379}/{REDIS_DB}"
    prefix = f"chute-deq-{uuid.uuid4().hex[:10]}"
    yield f"{base}?prefix={prefix}"
    client = redis.Redis.from_url(base)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
