"""Redis URLs: what each part means, and clear errors for what is wrong."""

from __future__ import annotations

import re

import pytest

from chute.errors import ConfigError, InvalidAPIName
from chute.registry import PluginManager
from chute_redis.connection import DEFAULT_MAX_PAYLOAD, RedisSettings, parse_url
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore


def test_a_bare_url_means_the_local_default_database() -> None:
    assert parse_url("redis://") == RedisSettings(host="localhost", port=6379, db=0)


def test_password_port_database_and_prefix() -> None:
    s = parse_url("redis://:pw@host:6380/3?prefix=x")
    assert (s.host, s.port, s.db, s.username, s.password, s.prefix) == (
        "host",
        6380,
        3,
        None,
        "pw",
        "x",
    )
    assert not s.tls
    assert s.max_payload_size == DEFAULT_MAX_PAYLOAD


def test_username_and_password_are_url_decoded() -> None:
    s = parse_url("redis://app%40team:p%2Fw%3Ad@h/0")
    assert (s.username, s.password) == ("app@team", "p/w:d")


def test_rediss_means_tls_with_certificate_checks() -> None:
    s = parse_url("rediss://default:secret@cache.example.com:6380/1")
    assert s.tls
    assert s.ssl_cert_reqs == "required"
    assert s.address == "rediss://cache.example.com:6380/1"
    relaxed = parse_url("rediss://h?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem")
    assert (relaxed.ssl_cert_reqs, relaxed.ssl_ca_certs) == ("none", "/etc/ca.pem")


def test_chute_parameters() -> None:
    s = parse_url("redis://h/2?max_payload_size=1024&timeout=2.5&retries=0")
    assert (s.max_payload_size, s.timeout, s.retries) == (1024, 2.5, 0)
    assert parse_url("redis://h/2?max_payload_size=16Mi").max_payload_size == 16 * 1024 * 1024


def test_the_password_is_never_shown() -> None:
    s = parse_url("redis://user:hunter2@h/0")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in s.address
    with pytest.raises(ConfigError) as err:
        parse_url("redis://user:hunter2@h/0?colour=blue")
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis://h/zero", "database must be a number"),
        ("redis://h:99999/0", "bad port"),
        ("redis://h/0?colour=blue", "unknown parameter 'colour'; known parameters: prefix"),
        ("redis://h/0?prefix=a&prefix=b", "'prefix' is given more than once"),
        ("redis://h/0?prefix=a{b}", "prefix"),
        ("redis://h/0?max_payload_size=-1", "max_payload_size"),
        ("redis://h/0?retries=-1", "must be a whole number"),
        ("redis://h/0?timeout=0", "positive"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "required, optional or none"),
        ("http://h/0", "not a Redis URL"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        parse_url(url)


def test_api_names_that_would_break_keys_are_refused() -> None:
    queue, store = RedisQueue("redis://h/0"), RedisStore("redis://h/0")
    assert store.record_prefix("my-api_v1.2") == "chute:s:my-api_v1.2:"
    assert queue.send_keys("my-api_v1.2")[0] == "chute:q:{my-api_v1.2}:visible"
    for bad in ("", "a{b}", "a b", "-x", "x" * 129):
        with pytest.raises(InvalidAPIName):
            store.record_prefix(bad)
        with pytest.raises(InvalidAPIName):
            queue.send_keys(bad)


def test_the_plugin_serves_both_schemes_for_both_roles() -> None:
    pm = PluginManager()
    for scheme in ("redis", "rediss"):
        assert isinstance(pm.open_queue(f"{scheme}://127.0.0.1/0"), RedisQueue)
        assert isinstance(pm.open_store(f"{scheme}://127.0.0.1/0"), RedisStore)


def test_the_store_limit_comes_from_the_url() -> None:
    assert RedisStore("redis://h/0").max_payload_size == DEFAULT_MAX_PAYLOAD
    assert RedisStore("redis://h/0?max_payload_size=10").max_payload_size == 10


def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them() -> None:
    """The hiredis packer sends exactly what redis-py's own would (and refuses what it does)."""
    import redis.asyncio.connection as plain
    import redis.exceptions

    from chute_redis.connection import _Connection

    args = (
        "EVALSHA",
        "f" * 40,
        2,
        "chute:s:api:{id}",
        b"raw\x00bytes",
        0.1,
        1e20,
        1733150000123.5,
        -3,
        memoryview(b"view"),
        bytearray(b"array"),
        "ünïcode",
        12345678901234567890,
    )
    ours, theirs = _Connection(), plain.Connection()
    assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))
    assert ours.pack_command("CONFIG GET", "maxmemory") == theirs.pack_command(
        "CONFIG GET", "maxmemory"
    )
    with pytest.raises(redis.exceptions.DataError):
        ours.pack_command("SET", "key", object())  # type: ignore[arg-type]
