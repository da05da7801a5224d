"""Redis URLs, the shared connection pool, Lua script calls and error translation.

One ``redis.asyncio.Redis`` client (one connection pool) serves every queue and store opened on
the same server, database and credentials in a process: the gateway's store and a dequeuer's
queue and store share connections, and no request pays for connection setup. The registry is
core's :mod:`chute.backends.pool` (per running event loop, ref-counted); URL options are read by
:func:`chute.backends.urls.parse_options`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.typing import EncodableT

from chute.backends.pool import LoopHandle, LoopShared
from chute.backends.urls import (
    Option,
    choice,
    matching,
    non_negative_int,
    parse_options,
    positive_seconds,
    redact,
    size,
    text,
)
from chute.errors import (
    BackendError,
    BackendUnavailable,
    ChuteError,
    ConfigError,
    CredentialsRefused,
)

#: Query parameters a ``redis://`` URL may carry: what each one means (for errors), how it is
#: read.
QUERY_PARAMETERS: Final[dict[str, Option[Any]]] = {
    "prefix": Option(
        "key prefix shared by every key chute writes (default 'chute')",
        matching(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", "letters, digits and . _ : - (at most 128)"),
    ),
    "max_payload_size": Option(
        "largest payload the store accepts, in bytes or as 16Mi (default 16 MiB)", size()
    ),
    "timeout": Option(
        "seconds one operation may take before it counts as unavailable (default 10)",
        positive_seconds(),
    ),
    "retries": Option(
        "reconnect attempts, with exponential backoff, before giving up (default 6)",
        non_negative_int(),
    ),
    "health_check_interval": Option(
        "seconds a pooled connection may idle before a PING (default 15)", non_negative_int()
    ),
    "ssl_cert_reqs": Option(
        "rediss:// certificate check: required (default), optional or none",
        choice("required", "optional", "none"),
    ),
    "ssl_ca_certs": Option("rediss:// CA bundle file", text()),
}

DEFAULT_PREFIX = "chute"
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


@dataclass(frozen=True)
class RedisSettings:
    """Everything a ``redis://`` or ``rediss://`` URL says."""

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ssl_cert_reqs: str = "required"
    ssl_ca_certs: str | None = None
    prefix: str = DEFAULT_PREFIX
    max_payload_size: int = DEFAULT_MAX_PAYLOAD
    timeout: float = 10.0
    retries: int = 6
    health_check_interval: int = 15

    @property
    def address(self) -> str:
        """Where the server is, for messages (never includes the password)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"

    @property
    def pool_key(self) -> tuple[object, ...]:
        """What decides which pool a URL uses: everything but chute's own parameters."""
        return (
            self.host,
            self.port,
            self.db,
            self.username,
            self.password,
            self.tls,
            self.ssl_cert_reqs,
            self.ssl_ca_certs,
            self.retries,
            self.health_check_interval,
        )


def parse_url(url: str) -> RedisSettings:
    """Parse ``redis://[[user]:password@]host[:port][/db][?prefix=…&…]`` (``rediss://`` for TLS).

    Raises ConfigError naming what is wrong.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigError(f"not a Redis URL: {redact(url)!r} (expected redis:// or rediss://)")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"Redis URL {redact(url)!r}: bad port ({exc})") from exc
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(f"Redis URL {redact(url)!r}: database must be a number, not {db_text!r}")
    values: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": port,
        "db": int(db_text),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "tls": scheme == "rediss",
    }
    values.update(parse_options(url, QUERY_PARAMETERS, label="Redis URL"))
    return RedisSettings(**values)


# --- the shared client -----------------------------------------------------------------------

#: One client (one connection pool) per event loop and :attr:`RedisSettings.pool_key`.
_clients: LoopShared[aioredis.Redis] = LoopShared()

#: Connections one process opens to one Redis; more concurrent operations wait for one.
MAX_CONNECTIONS = 100


async def _close(client: aioredis.Redis) -> None:
    await client.aclose()


class _HiredisPacking:
    """Commands packed by hiredis in C, as redis-py's synchronous client does; its asyncio
    connections pack in Python, joining the buffer again for every argument, which cost a
    batch script of ~100 arguments ~200 µs of the dequeuer's CPU where hiredis takes ~25
    (the bytes on the wire are the same)."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        head = args[0]
        if isinstance(head, str):  # "CONFIG GET" and the like: the words go separately
            args = (*head.encode().split(), *args[1:])
        elif isinstance(head, bytes) and b" " in head:
            args = (*head.split(), *args[1:])
        # hiredis's stub types the argument as a tuple of one element; it takes any length.
        try:
            return [hiredis.pack_command(args)]  # type: ignore[arg-type]
        except TypeError:
            pass  # a memoryview or bytearray (hiredis takes bytes only), or something unsendable
        parts = tuple(bytes(a) if isinstance(a, memoryview | bytearray) else a for a in args)
        try:
            return [hiredis.pack_command(parts)]  # type: ignore[arg-type]
        except TypeError as exc:
            raise rexc.DataError(str(exc)) from exc


class _Connection(_HiredisPacking, aioredis.Connection):
    pass


class _SSLConnection(_HiredisPacking, aioredis.SSLConnection):
    pass


def _new_client(settings: RedisSettings) -> aioredis.Redis:
    tls: dict[str, Any] = {}
    if settings.tls:
        tls = {"ssl": True, "ssl_cert_reqs": settings.ssl_cert_reqs}
        if settings.ssl_ca_certs:
            tls["ssl_ca_certs"] = settings.ssl_ca_certs
        if settings.ssl_cert_reqs == "none":
            tls["ssl_check_hostname"] = False
    # Reconnect with backoff (0.05 s doubling to 1 s): a Redis restart of a second or two
    # is ridden out inside one call. Operations are bounded by our own deadline instead of
    # socket_timeout, because receive blocks on BLPOP for as long as the caller asked.
    client = aioredis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password,
        socket_timeout=None,
        socket_connect_timeout=min(settings.timeout, 5.0),
        socket_keepalive=True,
        health_check_interval=settings.health_check_interval,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.025), settings.retries),
        client_name="chute",
        **tls,
    )
    # redis-py's default pool fails a call ("Too many connections") once 100 are in use: a
    # gateway with more requests in flight must wait for a connection instead (the wait counts
    # against the operation's deadline). Same connections, same settings, a blocking pool.
    default = client.connection_pool
    client.connection_pool = aioredis.BlockingConnectionPool(
        connection_class=_SSLConnection if settings.tls else _Connection,
        max_connections=MAX_CONNECTIONS,
        timeout=None,
        **default.connection_kwargs,
    )
    return client


class Connection:
    """A handle on the process's shared client for one URL; what queues and stores hold.

    The client is looked up on first use in each event loop; :meth:`aclose` gives it back, and
    the last user closes the pool.
    """

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self._factory = partial(_new_client, settings)
        self._handle = LoopHandle(
            _clients,
            settings.pool_key,
            _close,
            closed_message="this Redis queue or store is closed",
        )

    def client(self) -> aioredis.Redis:
        """The shared client for the running event loop."""
        return self._handle.get_now(self._factory)

    async def aclose(self) -> None:
        """Give the client back; close its pool if nobody else in this loop uses it."""
        await self._handle.aclose()

    def op(self, doing: str, *, wait: float = 0.0) -> Operation:
        """Bound one operation by the URL's timeout (plus ``wait`` for a blocking call) and
        translate redis-py's exceptions into chute's, naming the server and the operation."""
        return Operation(self.settings, doing, self.settings.timeout + wait)


def translate(exc: BaseException, where: str, doing: str) -> ChuteError | None:
    """chute's error for a redis-py (or socket) exception; None for anything else."""
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthorizationError | rexc.NoPermissionError):
        return CredentialsRefused(f"Redis at {where} refused our credentials ({doing}): {exc}")
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | rexc.ReadOnlyError):
        # ReadOnlyError: we reached a replica during a failover; the primary comes back.
        return BackendUnavailable(f"Redis at {where} is unavailable ({doing}): {exc}")
    if isinstance(exc, rexc.ResponseError):
        if str(exc).startswith(("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")):
            return BackendUnavailable(f"Redis at {where} is busy ({doing}): {exc}")
        return BackendError(f"Redis at {where} rejected {doing}: {exc}")
    if isinstance(exc, rexc.RedisError):
        return BackendError(f"Redis at {where} failed {doing}: {exc}")
    if isinstance(exc, OSError):  # socket or TLS errors redis-py did not wrap
        return BackendUnavailable(f"Redis at {where} is unreachable ({doing}): {exc}")
    return None


class Operation:
    """The context manager :meth:`Connection.op` returns.

    The deadline is a timer that cancels the task, as ``asyncio.timeout`` does, but usable in
    a plain ``with`` and about a third of the cost of ``anyio.fail_after`` (every Redis call
    pays it: docs/performance.md). Only a cancellation this timer caused becomes
    BackendUnavailable; any other (an enclosing cancel scope, a shutdown) passes through.
    """

    __slots__ = ("_cancelling", "_doing", "_fired", "_handle", "_limit", "_task", "_where")

    def __init__(self, settings: RedisSettings, doing: str, limit: float) -> None:
        self._where = settings.address
        self._doing = doing
        self._limit = limit
        self._fired = False

    def __enter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "a Redis operation runs in an asyncio task"
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = asyncio.get_running_loop().call_later(self._limit, self._expire)

    def _expire(self) -> None:
        self._fired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        # Ours: take our cancellation back; it is a timeout unless someone else also
        # cancelled the task meanwhile (then their cancellation goes on).
        timed_out = self._fired and self._task.uncancel() <= self._cancelling
        if timed_out and isinstance(exc, asyncio.CancelledError):
            raise BackendUnavailable(
                f"Redis at {self._where} did not answer within {self._limit:g} s ({self._doing})"
            ) from exc
        if exc is not None:
            translated = translate(exc, self._where, self._doing)
            if translated is not None:
                raise translated from exc
