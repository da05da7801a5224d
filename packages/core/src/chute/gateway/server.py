"""Serving the gateway with hypercorn, with a graceful stop on SIGTERM and SIGINT.

The listening socket is bound here, before hypercorn starts, so that ``port=0`` picks a free
port that can be logged (and read by tests and ``chute dev``) before the first request.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Awaitable, Callable

import anyio
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from chute.errors import ConfigError
from chute.gateway.app import Gateway

logger = logging.getLogger("chute.gateway")

#: Seconds in-flight requests get to finish after SIGTERM before their connections close.
DEFAULT_GRACEFUL_TIMEOUT = 30.0


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port chosen by the OS)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _until_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info(
                "stopping: no new connections, finishing in-flight requests",
                extra={"signal": signal.Signals(signum).name},
            )
            return


async def serve(
    app: Gateway,
    *,
    host: str = "127.0.0.1",
    port: int = 8888,
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    on_listening: Callable[[str], None] | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM/SIGINT, then stop accepting connections,
    let in-flight requests finish (up to ``graceful_timeout`` seconds) and close the backends.

    ``on_listening`` is called with the URL once the socket listens; ``shutdown_trigger``
    (default: the first SIGTERM or SIGINT) returns when the server should stop. Raises the gateway's
    startup error (e.g. an unknown backend scheme) if it could not start.
    """
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    url = url_of(sock)
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here on
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    logger.info(f"chute gateway listening on {url}", extra={"url": url})
    if on_listening is not None:
        on_listening(url)
    try:
        await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger or _until_signal)  # type: ignore[arg-type]
    except Exception:
        if app.startup_error is not None:
            raise app.startup_error from None
        raise
    logger.info("stopped")
