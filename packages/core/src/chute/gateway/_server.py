"""Serving the gateway, with a graceful stop on SIGTERM and SIGINT.

uvicorn (with httptools) serves it by default; hypercorn (HTTP/2) and granian can instead
(``chute gateway --server``; granian must be installed). The default was chosen by measuring
the three against each other in benchmarks/: uvicorn takes half hypercorn's CPU per request
(docs/performance.md has the figures). Each keeps the same promises: the early 413 (a body
over the limit refused before it is read) and the graceful drain (in-flight requests finish
after SIGTERM), both tested on every server.

The listening socket is bound here, before the server starts, so that ``port=0`` picks a free
port that can be logged (and read by tests and ``chute dev``) before the first request.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import anyio

from chute.errors import ConfigError
from chute.gateway._app import Gateway, Message, Receive, Scope, Send

logger = logging.getLogger("chute.gateway")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Seconds in-flight requests get to finish after SIGTERM before their connections close.
DEFAULT_GRACEFUL_TIMEOUT = 30.0
#: The ASGI servers the gateway can run on; the first is the default.
SERVERS = ("uvicorn", "hypercorn", "granian")


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


async def _first_signal(signals: AsyncIterator[int]) -> None:
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
    server: str = SERVERS[0],
) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM/SIGINT, then stop accepting connections,
    let in-flight requests finish (up to ``graceful_timeout`` seconds) and close the backends.

    ``on_listening`` is called with the URL once the socket listens; ``shutdown_trigger``
    (default: the first SIGTERM or SIGINT) returns when the server should stop. Raises the gateway's
    startup error (e.g. an unknown backend scheme) if it could not start.
    ``server`` picks the ASGI server (one of :data:`SERVERS`).
    """
    if server not in SERVERS:
        raise ConfigError(f"unknown server {server!r}; choose one of {', '.join(SERVERS)}")
    if shutdown_trigger is None:
        # Catch SIGTERM/SIGINT from before the socket listens: one that came while the server
        # starts (a request may already be in the backlog) would otherwise kill the process.
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await serve(
                app,
                host=host,
                port=port,
                graceful_timeout=graceful_timeout,
                on_listening=on_listening,
                shutdown_trigger=partial(_first_signal, signals),
                server=server,
            )
        return
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    url = url_of(sock)
    trigger = shutdown_trigger
    assert trigger is not None  # the signals' trigger, set above, when none was given
    run = {"uvicorn": _serve_uvicorn, "hypercorn": _serve_hypercorn, "granian": _serve_granian}
    await run[server](app, sock, url, graceful_timeout, on_listening, trigger)


async def _serve_hypercorn(
    app: Gateway,
    sock: socket.socket,
    url: str,
    graceful_timeout: float,
    on_listening: Callable[[str], None] | None,
    trigger: Callable[[], Awaitable[object]],
) -> None:
    # Imported here: hypercorn (h2, wsproto) is a fifth of the gateway's start-up CPU when
    # another server runs it.
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here on
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    _announce(url, "hypercorn", on_listening)

    async def stop() -> None:
        await trigger()
        app.stopping()  # long-polls answer now instead of holding the graceful stop

    try:
        await hypercorn_serve(app, config, shutdown_trigger=stop)  # type: ignore[arg-type]
    except Exception:
        if app.startup_error is not None:
            raise app.startup_error from None
        raise
    logger.info("stopped")


def _announce(url: str, server: str, on_listening: Callable[[str], None] | None) -> None:
    logger.info(f"chute gateway listening on {url}", extra={"url": url, "server": server})
    if on_listening is not None:
        on_listening(url)


def _missing(server: str) -> ConfigError:
    return ConfigError(f"--server {server}: {server} is not installed (pip install {server})")


@contextlib.contextmanager
def _startup_errors(app: Gateway) -> Iterator[None]:
    """Raise the gateway's own startup error rather than the server's way of reporting it."""
    try:
        yield
    except (Exception, SystemExit, BaseExceptionGroup):  # uvicorn exits on failed startup
        if app.startup_error is not None:
            raise app.startup_error from None
        raise
    if app.startup_error is not None:
        raise app.startup_error


async def _serve_uvicorn(
    app: Gateway,
    sock: socket.socket,
    url: str,
    graceful_timeout: float,
    on_listening: Callable[[str], None] | None,
    trigger: Callable[[], Awaitable[object]],
) -> None:
    try:
        import uvicorn
    except ImportError:
        sock.close()
        raise _missing("uvicorn") from None

    serving = anyio.Event()

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # signals are ours (``trigger``): uvicorn would re-raise them on exit

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                _announce(url, "uvicorn", on_listening)  # the app is up and the socket served
            serving.set()

    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(graceful_timeout),
        server_header=False,
    )
    uv = Server(config)

    async def stop_on_trigger() -> None:
        await trigger()
        app.stopping()  # long-polls answer now instead of holding the graceful stop
        # A stop asked for while uvicorn starts waits for it to serve: uvicorn would otherwise
        # return from its start-up without reading the requests already in the backlog.
        await serving.wait()
        uv.should_exit = True

    with sock, _startup_errors(app):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_trigger)
            await uv.serve(sockets=[sock])
            tg.cancel_scope.cancel()
    logger.info("stopped")


async def _serve_granian(
    app: Gateway,
    sock: socket.socket,
    url: str,
    graceful_timeout: float,
    on_listening: Callable[[str], None] | None,
    trigger: Callable[[], Awaitable[object]],
) -> None:
    try:
        from granian.constants import Interfaces
        from granian.server.embed import Server
    except ImportError:
        sock.close()
        raise _missing("granian") from None
    # granian binds its own socket: hand it the address ours got (a free one for port 0).
    host, port = sock.getsockname()[:2]
    sock.close()
    options: dict[str, Any] = {"log_enabled": False, "websockets": False, "backlog": 1024}

    app_started = anyio.Event()
    served = _on_startup_complete(app, app_started.set)
    server = Server(served, address=host, port=port, interface=Interfaces.ASGI, **options)
    server.workers_kill_timeout = int(graceful_timeout)

    async def stop_on_trigger() -> None:
        await trigger()
        app.stopping()  # long-polls answer now instead of holding the graceful stop
        server.stop()  # type: ignore[no-untyped-call]

    async def announce_when_listening() -> None:
        # granian binds its socket in its worker, after the app's startup: announce the URL
        # once a connection to it is accepted.
        await app_started.wait()
        while True:
            try:
                probe = await anyio.connect_tcp(host, port)
            except OSError:
                await anyio.sleep(0.01)
                continue
            await probe.aclose()
            _announce(url, "granian", on_listening)
            return

    with _startup_errors(app):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_trigger)
            tg.start_soon(announce_when_listening)
            await server.serve()
            tg.cancel_scope.cancel()
    logger.info("stopped")


def _on_startup_complete(app: Gateway, started: Callable[[], None]) -> ASGIApp:
    """``app``, calling ``started`` once its lifespan startup has completed."""

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_and_tell(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                started()

        await app(scope, receive, send_and_tell)

    return served
