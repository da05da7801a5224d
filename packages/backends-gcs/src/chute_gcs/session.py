"""The HTTP session and the credentials that chute-gcs's clients (Cloud Storage, Pub/Sub) share
per endpoint in a process, so no request pays for a TLS handshake or a token fetch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from chute.backends.pool import LoopShared
from chute.errors import BackendUnavailable, ConfigError


class Shared:
    """One endpoint's session and, once fetched, its credentials."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.token: Any = None  # gcloud.aio.auth.Token, created on the first authorised call


async def close(shared: Shared) -> None:
    await shared.session.close()


def registry() -> LoopShared[Shared]:
    """A registry of shared sessions, one per endpoint (and event loop)."""
    return LoopShared(usable=lambda shared: not shared.session.closed)


def new_shared(*, auto_decompress: bool = True) -> Shared:
    # A generous pool: the gateway and the dequeuer run many requests (and long pulls) at once.
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, keepalive_timeout=30)
    return Shared(aiohttp.ClientSession(connector=connector, auto_decompress=auto_decompress))


async def authorization(
    shared: Shared, *, emulator: bool, scopes: Sequence[str], service: str, doing: str
) -> dict[str, str]:
    """The Authorization header: none for an emulator, else an Application Default
    Credentials token (GOOGLE_APPLICATION_CREDENTIALS, gcloud's user credentials, or the
    metadata server: Workload Identity on GKE), cached and refreshed by gcloud-aio-auth."""
    if emulator:
        return {}
    if shared.token is None:
        from gcloud.aio.auth import Token

        try:
            shared.token = Token(scopes=list(scopes), session=shared.session)  # type: ignore[arg-type]
        except (ValueError, OSError, KeyError) as exc:
            raise ConfigError(f"{service} credentials could not be loaded: {exc}") from exc
    try:
        token = await shared.token.get()
    except Exception as exc:  # gcloud-aio-auth raises plain Exceptions and aiohttp's
        raise BackendUnavailable(
            f"no Google access token for {doing} (Application Default Credentials: "
            "GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login` or "
            f"the metadata server): {type(exc).__name__}: {exc}"
        ) from exc
    return {"Authorization": f"Bearer {token}"}
