"""redis-py's exceptions never escape: chute's errors come out, with the server named."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis
from redis_helpers import body, new_record

from chute.errors import BackendError, BackendUnavailable, CredentialsRefused
from chute.testing import free_port
from chute.testing.services import REDIS, LocalServer, local_server, tcp_probe
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def nothing_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0?retries=0&timeout=5"


async def test_every_operation_on_a_closed_port_is_unavailable(nothing_url: str) -> None:
    record = new_record()
    async with RedisQueue(nothing_url) as queue, RedisStore(nothing_url) as store:
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1.*sending"):
            await queue.send("demo", record.id)
        with pytest.raises(BackendUnavailable):
            await queue.receive("demo", wait=0.1)
        with pytest.raises(BackendUnavailable):
            await queue.depth("demo")
        with pytest.raises(BackendUnavailable):
            await queue.ping()
        with pytest.raises(BackendUnavailable, match="creating request"):
            await store.create(record, body(b"{}"))
        with pytest.raises(BackendUnavailable):
            await store.read("demo", record.id)
        with pytest.raises(BackendUnavailable):
            await anext(store.payload("demo", record.id))
        with pytest.raises(BackendUnavailable):
            await store.ping()


async def test_reconnecting_gives_up_after_the_retries(nothing_url: str) -> None:
    url = nothing_url.replace("retries=0", "retries=3")
    started = anyio.current_time()
    async with RedisQueue(url) as queue:
        with pytest.raises(BackendUnavailable) as err:
            await queue.depth("demo")
    # 3 retries back off 0.05 + 0.1 + 0.2 s before giving up
    assert anyio.current_time() - started >= 0.3
    assert isinstance(err.value.__cause__, redis.ConnectionError)


async def test_a_redis_error_becomes_a_backend_error(redis_url: str, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url.split("?")[0])
    await client.set(f"{prefix}:q:{{demo}}:visible", "not a list")
    await client.aclose()
    async with RedisQueue(redis_url) as queue:
        with pytest.raises(BackendError, match="WRONGTYPE") as err:
            await queue.send("demo", "abc")
    assert not isinstance(err.value, BackendUnavailable)


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[LocalServer]:
    # A server that wants a password does not answer PING, so wait for its port instead.
    spec = dataclasses.replace(REDIS, probe=tcp_probe)
    with local_server(spec, tmp_path, extra_args=["--requirepass", "s3cret"]) as server:
        yield server


async def test_wrong_credentials_are_an_error_not_an_outage(password_redis: LocalServer) -> None:
    port = password_redis.port
    async with RedisQueue(f"redis://:wrong@127.0.0.1:{port}/0?retries=0") as queue:
        with pytest.raises(CredentialsRefused, match="credentials") as err:
            await queue.depth("demo")
        assert not isinstance(err.value, BackendUnavailable)
        assert "wrong" not in str(err.value)
    async with RedisQueue(f"redis://:s3cret@127.0.0.1:{port}/0") as queue:
        assert (await queue.depth("demo")).queued == 0


async def test_no_password_where_one_is_required_is_credentials_refused(
    password_redis: LocalServer,
) -> None:
    store_url = f"redis://127.0.0.1:{password_redis.port}/0?retries=0"
    async with RedisStore(store_url) as store:
        with pytest.raises(CredentialsRefused, match="refused our credentials") as err:
            await store.read("demo", new_record().id)
    assert not isinstance(err.value, BackendUnavailable)


async def test_a_user_without_permission_is_credentials_refused(
    password_redis: LocalServer,
) -> None:
    port = password_redis.port
    admin = redis.Redis(host="127.0.0.1", port=port, password="s3cret")
    # A user that may connect (PING, CLIENT SETNAME) and nothing else: a send is NOPERM.
    admin.acl_setuser(
        "reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["-@all", "+@connection"]
    )
    admin.close()
    async with RedisQueue(f"redis://reader:pw@127.0.0.1:{port}/0?retries=0") as queue:
        await queue.ping()
        with pytest.raises(CredentialsRefused, match="refused our credentials") as err:
            await queue.send("demo", new_record().id)
    assert not isinstance(err.value, BackendUnavailable)
    assert "NOPERM" in str(err.value) or "no permissions" in str(err.value)
    assert ":pw@" not in str(err.value)  # never the password
