"""The Pub/Sub REST calls chute makes, on one aiohttp session per process and endpoint.

Direct calls to the REST API (v1, JSON) on aiohttp, with gcloud-aio-auth's credentials: the
libraries the GCS store already uses, chosen by measurement over gcloud-aio-pubsub and
google-cloud-pubsub (gRPC), see docs/gcs.md and benchmarks/pubsub_client.py. The session is
shared per endpoint and event loop through ``chute.backends.pool``, like the GCS store's.

Every request is bounded by the URL's ``timeout`` (a long pull by HOLD_LIMIT); 408, 429,
5xx and network errors are retried with exponential backoff and jitter, at most ``retries``
times, then raise BackendUnavailable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import msgspec

from chute.backends.pool import LoopHandle
from chute.errors import BackendError, BackendUnavailable, ChuteError, CredentialsRefused
from chute_gcs import session
from chute_gcs.client import RETRY_STATUSES, _backoff
from chute_gcs.pubsub_settings import PubSubSettings

#: OAuth scope for Pub/Sub (publish, pull, ack, and managing topics and subscriptions).
SCOPES: Final = ["https://www.googleapis.com/auth/pubsub"]

#: The longest a held request (a long pull) may stay open; Google Cloud answers a pull well
#: before, the emulator only when a message comes.
HOLD_LIMIT: Final = 300.0

_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


_sessions = session.registry()


class PubSubClient:
    """The REST API of one project, on the process's shared session for its endpoint."""

    def __init__(self, settings: PubSubSettings) -> None:
        self.settings = settings
        self.base = f"{settings.endpoint}/v1/"
        self._handle = LoopHandle(
            _sessions,
            settings.session_key,
            session.close,
            closed_message="this Pub/Sub queue is closed",
        )

    async def aclose(self) -> None:
        await self._handle.aclose()

    async def _auth(self, shared: session.Shared, doing: str) -> dict[str, str]:
        return await session.authorization(
            shared, emulator=self.settings.emulator, scopes=SCOPES, service="Pub/Sub", doing=doing
        )

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        doing: str,
        expect: frozenset[int] = frozenset({200}),
        hold: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """Send a JSON request to ``<endpoint>/v1/<path>``; return the status (one of
        ``expect``) and the decoded answer. ``hold``: the server holds the request open until
        it has something (a long pull): connecting is bounded by the URL's timeout, the whole
        request by HOLD_LIMIT (raising TimeoutError, not retried), so a connection that died
        without a word cannot hold a pull forever."""
        shared = self._handle.get_now(session.new_shared)
        settings = self.settings
        url = self.base + path
        data = None if body is None else _encoder.encode(dict(body))
        headers = {"Content-Type": "application/json"} if data is not None else {}
        limit = (
            aiohttp.ClientTimeout(total=HOLD_LIMIT, sock_connect=settings.timeout)
            if hold
            else aiohttp.ClientTimeout(total=settings.timeout)
        )
        attempts = 1 + settings.retries
        for attempt in range(attempts):
            last = attempt == attempts - 1
            sent = {**headers, **await self._auth(shared, doing)}
            try:
                async with shared.session.request(
                    method, url, data=data, headers=sent, timeout=limit
                ) as response:
                    status = response.status
                    raw = await response.read()
                    retry_after = response.headers.get("Retry-After")
            except TimeoutError:
                if hold:
                    raise  # the caller decides what a pull that brought nothing means
                if last:
                    raise BackendUnavailable(
                        f"Pub/Sub at {settings.endpoint} did not answer within "
                        f"{settings.timeout:g} s ({doing})"
                    ) from None
                await _backoff(attempt)
                continue
            except (aiohttp.ClientError, OSError) as exc:
                if last:
                    raise BackendUnavailable(
                        f"Pub/Sub at {settings.endpoint} is unreachable ({doing}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                await _backoff(attempt)
                continue
            if status in expect:
                try:
                    return status, _decoder.decode(raw) if raw.strip() else {}
                except msgspec.DecodeError as exc:
                    raise BackendError(
                        f"Pub/Sub at {settings.endpoint} answered {doing} with no JSON"
                    ) from exc
            if status in RETRY_STATUSES and not last:
                await _backoff(attempt, retry_after)
                continue
            raise status_error(status, raw, settings, doing)
        raise AssertionError("unreachable")  # pragma: no cover


def status_error(status: int, body: bytes, settings: PubSubSettings, doing: str) -> ChuteError:
    """chute's error for a Pub/Sub error answer (after retries)."""
    message = body[:300].decode(errors="replace").strip()
    with contextlib.suppress(msgspec.DecodeError, AttributeError):
        message = str(_decoder.decode(body).get("error", {}).get("message", "")) or message
    where = f"Pub/Sub at {settings.address}"
    if status in RETRY_STATUSES:
        return BackendUnavailable(f"{where} kept answering {status} ({doing}): {message}")
    if status in (401, 403):
        return CredentialsRefused(f"{where} refused our credentials ({doing}): {status} {message}")
    return BackendError(f"{where} rejected {doing}: {status} {message}")
