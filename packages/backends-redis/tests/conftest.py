"""Fixtures for the Redis backend's tests: a real Redis server, found through
``chute.testing.services`` (``$CHUTE_TEST_REDIS_URL``, else 127.0.0.1:6379, else a
``redis-server`` we start, else testcontainers).

On a shared server the tests use database 9 and key prefixes unique to this session, and delete
their keys at the end.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import redis

from chute.testing.services import (
    REDIS,
    REDIS_DURABLE_ARGS,
    FoundService,
    LocalServer,
    local_server,
)

#: The database the tests use when the URL does not name one (not the default 0).
TEST_DB = 9

_counter = itertools.count()


def with_params(url: str, **params: str) -> str:
    """``url`` with database ``TEST_DB`` unless it names one, and ``params`` added to its query."""
    parts = urlsplit(url)
    path = parts.path if parts.path.strip("/") else f"/{TEST_DB}"
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return parts._replace(path=path, query=urlencode(query)).geturl()


@pytest.fixture(scope="session")
def session_prefix(redis_service: FoundService) -> Iterator[str]:
    """A key prefix no other run shares; every key under it is deleted after the session."""
    prefix = f"chute-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(with_params(redis_service.url))
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.ConnectionError:
        pass  # the server went away with the session (a private one we started)
    finally:
        client.close()


@pytest.fixture
def redis_url(redis_service: FoundService, session_prefix: str) -> str:
    """A Redis URL with a key prefix of this test's own."""
    return with_params(redis_service.url, prefix=f"{session_prefix}.{next(_counter)}")


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain synchronous client on the test's server and database, to look at the keys."""
    client = redis.Redis.from_url(urlsplit(redis_url)._replace(query="").geturl())
    yield client
    client.close()


@pytest.fixture
def prefix(redis_url: str) -> str:
    return dict(parse_qsl(urlsplit(redis_url).query))["prefix"]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[LocalServer]:
    """A redis-server of this test's own, with every write fsynced to its append-only file, so
    it can be killed and restarted without losing what it acknowledged."""
    server = local_server(REDIS, tmp_path / "redis", extra_args=REDIS_DURABLE_ARGS)
    with server:
        yield server
