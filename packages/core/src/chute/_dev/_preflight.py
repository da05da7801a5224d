"""Checks before ``chute dev`` starts a process: the backends exist, accept their options and
answer; every API's key environment variable is set. A problem fails at once with one line that
names the backend, its address and the operating system's error, instead of a gateway that
waits forever for a backend nobody can reach (docs/dev.md)."""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from chute.backends.urls import redact
from chute.config import API
from chute.errors import BackendError, ConfigError, PreflightError
from chute.registry import open_queue, open_store

#: How long each backend may take to answer its ping.
PING_TIMEOUT = 15.0


def check(apis: Iterable[API], *, queue_url: str, store_url: str) -> None:
    """Raise :class:`PreflightError` (or ConfigError) for the first problem found."""
    from chute.gateway._auth import global_keys, read_api_keys

    global_keys(None)  # $CHUTE_API_KEYS well-formed
    for api in apis:
        read_api_keys(api)  # ConfigError naming the API and the unset variable
    anyio.run(_ping_backends, queue_url, store_url)


async def _ping_backends(queue_url: str, store_url: str) -> None:
    await _ping("queue", queue_url)
    await _ping("store", store_url)


async def _ping(role: str, url: str) -> None:
    opener = open_queue if role == "queue" else open_store
    shown = redact(url)
    try:
        backend = opener(url)  # unknown scheme, bad options: ConfigError with the details
    except ConfigError as exc:
        raise ConfigError(f"the {role} URL {shown}: {exc}") from exc
    try:
        async with backend:
            with anyio.fail_after(PING_TIMEOUT):
                await backend.ping()
    except TimeoutError:
        raise PreflightError(
            f"the {role} backend {shown} did not answer within {PING_TIMEOUT:g} s"
        ) from None
    except BackendError as exc:
        raise PreflightError(f"the {role} backend {shown} is not usable: {exc}") from exc
    except OSError as exc:
        raise PreflightError(f"the {role} backend {shown} is not usable: {exc}") from exc
