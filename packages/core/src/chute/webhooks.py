"""Webhooks: POST a request's outcome to a URL when it reaches a terminal status.

One :class:`WebhookSender` per process (the gateway sends ``cancelled`` and ``expired`` for the
moves it makes, the dequeuer ``completed``, ``failed`` and ``expired`` for its own). A delivery
never delays or endangers the result: the record is written first, then :meth:`notify` queues
the delivery and returns at once; a background task POSTs it and retries failures with backoff
for a bounded time, and the outcome is recorded on the record with ``Store.annotate`` (shown in
``GET`` as ``webhook``).

Deliveries follow the Standard Webhooks scheme (https://www.standardwebhooks.com): headers
``webhook-id`` (stable across retries of one event), ``webhook-timestamp`` (epoch seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the
base64-decoded secret (``whsec_<base64>``). :func:`verify` checks one; docs/webhooks.md shows a
receiver's stdlib-only check. The body is the same JSON as ``GET /<api>/<id>``.

Bounded: at most ``max_pending`` deliveries wait (the oldest is dropped, with a log line, when
a new one arrives to a full queue) and at most ``max_in_flight`` are being sent or waiting for
their next retry. Retries live in memory: a delivery still retrying when its process stops is
given up after :meth:`aclose`'s timeout, and its recorded status stays ``pending``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.abc
import msgspec

from chute._webhook_targets import TargetRefused, check_request_url, pinned, resolve_target
from chute.backends.base import Store
from chute.closing import AsyncClosing
from chute.config import API, WEBHOOK_EVENTS, Retries
from chute.errors import ChuteError
from chute.errors import WebhookSecretError as WebhookSecretError
from chute.errors import WebhookVerificationError as WebhookVerificationError
from chute.protocol import EXTRA_WEBHOOK, EXTRA_WEBHOOK_URL, RequestRecord, result_response, rfc3339

if TYPE_CHECKING:
    import ssl

    import httpx

log = logging.getLogger("chute.webhooks")

#: How long one delivery keeps retrying after its first attempt failed.
DEFAULT_RETRY_FOR = 300.0
#: Time limit of one POST (connect, send, answer).
DEFAULT_TIMEOUT = 10.0
SECRET_PREFIX = "whsec_"
#: How far a delivery's timestamp may be from the receiver's clock (replay protection).
DEFAULT_TOLERANCE = 300.0

_encoder = msgspec.json.Encoder()


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_<base64>`` (the prefix is optional)."""
    raw = secret.strip()
    raw = raw.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSecretError(
            "a webhook secret must be 'whsec_' followed by base64 (e.g. "
            "'whsec_' + base64 of 32 random bytes)"
        ) from None
    if not key:
        raise WebhookSecretError("a webhook secret must not be empty")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a delivery the way a receiver should; raise WebhookVerificationError if it fails.

    Looks up ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` in ``headers``
    (any letter case), refuses a timestamp more than ``tolerance`` seconds away from ``now``,
    and accepts the body if any ``v1,`` signature in the (space-separated) header matches,
    compared in constant time.
    """
    lower = {name.lower(): value for name, value in headers.items()}
    try:
        webhook_id = lower["webhook-id"]
        timestamp_text = lower["webhook-timestamp"]
        signatures = lower["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far from now (replayed?)")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return
    raise WebhookVerificationError("no matching signature")


class _Job(msgspec.Struct, kw_only=True):
    """One event to deliver, with everything needed to send and record it."""

    store: Store
    api: str
    request_id: str
    event: str
    url: str
    secret_env: str | None
    webhook_id: str
    body: bytes
    secret_error: bool = False  # the secret is missing or malformed: retrying cannot help
    #: The URL is the request's own (X-Chute-Webhook): checked against the API's allowlist
    #: and its addresses at every attempt (chute._webhook_targets).
    guarded: bool = False
    allowlist: tuple[str, ...] = ()
    private_targets: bool = False
    refused: bool = False  # the guard refused the target: retrying cannot help


class WebhookSender(AsyncClosing):
    """Delivers webhooks in the background; use as ``async with WebhookSender() as sender``.

    :meth:`notify` never blocks and never raises for a delivery problem; the outcome of each
    delivery is logged and recorded on the request (``extra["webhook"]``).
    """

    def __init__(
        self,
        *,
        retry_for: float = DEFAULT_RETRY_FOR,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Retries | None = None,
        max_pending: int = 1000,
        max_in_flight: int = 64,
        close_timeout: float = 10.0,
        observe: Callable[[str], None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``retry_for``: seconds after the first attempt during which failures are retried;
        ``backoff``: the delays between attempts (default 1 s doubling up to 1 min, jittered);
        ``observe``: called with each delivery's final outcome (``delivered``, ``failed``,
        ``dropped``), e.g. for a metric; ``environ``: where secrets are looked up
        (default ``os.environ``)."""
        self.retry_for = retry_for
        self.timeout = timeout
        self.backoff = backoff or Retries(initial_backoff="1s", max_backoff="1m")
        self.max_in_flight = max_in_flight
        self.close_timeout = close_timeout
        self._observe = observe
        self._environ = os.environ if environ is None else environ
        self._pending: collections.deque[_Job] = collections.deque(maxlen=max_pending)
        self._wake = anyio.Event()
        self._closing = False
        self._active = 0
        self._done = anyio.Event()  # set once closing and nothing is left to deliver
        self._client: httpx.AsyncClient | None = None
        #: The CA certificates loaded once (~30 ms of CPU each time): a guarded delivery's
        #: client of its own would load them again, with the event loop stopped meanwhile.
        self._tls: ssl.SSLContext | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    # -- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._dispatch, self._tg)
        return self

    async def aclose(self) -> None:
        """Stop taking new deliveries; wait up to ``close_timeout`` seconds for the pending
        ones (retries included), then give up the rest (they stay ``pending``)."""
        if self._tg is None:
            return
        tg, self._tg = self._tg, None
        self._closing = True
        self._wake.set()
        self._check_done()
        # Scopes must nest: the shielded wait closes before the task group's own exit.
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.close_timeout):
            await self._done.wait()
        left = len(self._pending) + self._active
        if left:
            log.warning("gave up %d webhook deliveries at shutdown", left)
        tg.cancel_scope.cancel()
        try:
            await tg.__aexit__(None, None, None)
        finally:
            if self._client is not None:
                with anyio.CancelScope(shield=True):
                    await self._client.aclose()
                self._client = None

    async def _pool(self) -> httpx.AsyncClient:
        """The pooled client, made at the first delivery: httpx is imported then (in a
        thread, the loop keeps running), not at start-up, where it was a third of a
        dequeuer's start (most dequeuers never send a webhook)."""
        if self._client is None:
            await anyio.to_thread.run_sync(importlib.import_module, "httpx")
            import httpx

            tls = await anyio.to_thread.run_sync(httpx.create_ssl_context)
            if self._client is None:  # another delivery may have made it meanwhile
                self._tls = tls
                self._client = httpx.AsyncClient(
                    verify=tls,
                    timeout=self.timeout,
                    follow_redirects=False,  # a redirect is not a delivery
                    limits=httpx.Limits(max_connections=self.max_in_flight),
                    headers={"User-Agent": "chute-webhooks"},
                )
        return self._client

    # -- queueing --------------------------------------------------------------------------

    def notify(
        self, store: Store, api: API, record: RequestRecord, result: bytes | None = None
    ) -> None:
        """Queue the webhook for ``record``'s (terminal) status, if the API or the request
        asks for one and subscribes to that event; return at once. ``result`` is the stored
        result JSON of a ``completed`` record, spliced into the body as ``GET`` does."""
        event = record.status.value
        url = record.extra.get(EXTRA_WEBHOOK_URL)
        hook = api.webhook
        events = hook.events if hook is not None else WEBHOOK_EVENTS
        guarded = isinstance(url, str) and bool(url)
        if not guarded:
            url = hook.url if hook is not None else None
        if url is None or event not in events or not record.status.terminal:
            return
        if self._tg is None or self._closing:
            log.warning(
                "webhook not sent: the sender is not running",
                extra={"api": record.api, "request_id": record.id, "event": event},
            )
            self._count("dropped")
            return
        response = result_response(
            record,
            msgspec.Raw(result) if result is not None else msgspec.UNSET,
            endpoint=api.endpoint,
        )
        job = _Job(
            store=store,
            api=record.api,
            request_id=record.id,
            event=event,
            url=url,
            secret_env=hook.secret_env if hook is not None else None,
            # Stable across retries and for a repeated notify of the same outcome, so a
            # receiver can drop duplicates; distinct for each attempt's own outcome.
            webhook_id=f"msg_{record.id}_{event}_{record.attempt}",
            body=_encoder.encode(response),
            guarded=guarded,
            allowlist=hook.request_urls if hook is not None else (),
            private_targets=hook.private_targets if hook is not None else False,
        )
        if len(self._pending) == self._pending.maxlen:
            dropped = self._pending[0]
            log.warning(
                "webhook queue full; oldest delivery dropped",
                extra={"api": dropped.api, "request_id": dropped.request_id},
            )
            self._count("dropped")
        self._pending.append(job)
        self._wake.set()

    def _check_done(self) -> None:
        if self._closing and not self._pending and self._active == 0:
            self._done.set()

    async def _dispatch(self, tg: anyio.abc.TaskGroup) -> None:
        """The only task that takes jobs off the queue: one delivery task per job, at most
        ``max_in_flight`` at a time. (``tg`` is passed in: ``aclose`` may already have cleared
        ``self._tg`` by the time this task first runs.)"""
        slots = anyio.Semaphore(self.max_in_flight)
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()
            await slots.acquire()
            job = self._pending.popleft()  # only this task pops: still non-empty
            self._active += 1
            tg.start_soon(self._run, job, slots)

    async def _run(self, job: _Job, slots: anyio.Semaphore) -> None:
        try:
            await self._deliver(job)
        finally:
            self._active -= 1
            slots.release()
            self._check_done()

    # -- delivery --------------------------------------------------------------------------

    async def _deliver(self, job: _Job) -> None:
        extra = {"api": job.api, "request_id": job.request_id, "event": job.event}
        await self._pool()  # the first delivery imports httpx: not part of the retry window
        give_up_at = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            attempt += 1
            status_code, error = await self._attempt(job)
            outcome: dict[str, Any] = {
                "event": job.event,
                "attempts": attempt,
                "last_attempt_at": rfc3339(time.time()),
            }
            if status_code is not None:
                outcome["status_code"] = status_code
            if error is None:
                outcome["status"] = "delivered"
                log.info("webhook delivered", extra={**extra, "attempts": attempt})
                await self._record(job, outcome)
                self._count("delivered")
                return
            outcome["error"] = error
            delay = self.backoff.backoff(attempt)
            final = job.secret_error or job.refused or time.monotonic() + delay > give_up_at
            outcome["status"] = "failed" if final else "pending"
            await self._record(job, outcome)
            if final:
                log.warning(
                    "webhook delivery failed; giving up",
                    extra={**extra, "attempts": attempt, "error": error},
                )
                self._count("failed")
                return
            log.info(
                "webhook delivery failed; retrying",
                extra={**extra, "attempts": attempt, "error": error, "delay": round(delay, 3)},
            )
            await anyio.sleep(delay)

    async def _attempt(self, job: _Job) -> tuple[int | None, str | None]:
        """POST once; return (status code, error) with error None on a 2xx."""
        pool = await self._pool()
        import httpx  # loaded by _pool

        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": job.webhook_id,
            "webhook-timestamp": str(timestamp),
        }
        if job.secret_env is not None:
            secret = self._environ.get(job.secret_env)
            try:
                if not secret:
                    raise WebhookSecretError(
                        f"the environment variable {job.secret_env} holding the webhook "
                        "secret is not set"
                    )
                headers["webhook-signature"] = sign(secret, job.webhook_id, timestamp, job.body)
            except WebhookSecretError as exc:
                job.secret_error = True
                return None, str(exc)
        url, extensions = job.url, {}
        if job.guarded:
            try:
                check_request_url(url, job.allowlist, private_targets=job.private_targets)
                addresses = await resolve_target(url, private_targets=job.private_targets)
            except TargetRefused as exc:
                job.refused = True
                return None, f"refused: {exc}"
            # Connect to the address just checked, not to a second DNS answer.
            url, headers["Host"], server_name = pinned(url, addresses[0])
            extensions["sni_hostname"] = server_name
        try:
            if job.guarded:
                # A connection of its own: pooled connections are keyed by the address, and
                # one opened (and TLS-checked) for another name must not carry this request.
                await self._pool()  # the CA certificates, loaded once
                async with httpx.AsyncClient(
                    verify=self._tls or True,
                    timeout=self.timeout,
                    follow_redirects=False,
                    headers={"User-Agent": "chute-webhooks"},
                ) as client:
                    response = await client.post(
                        url, content=job.body, headers=headers, extensions=extensions
                    )
            else:
                response = await pool.post(url, content=job.body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"receiver answered {response.status_code}"

    async def _record(self, job: _Job, outcome: dict[str, Any]) -> None:
        """Write the outcome on the record; a store problem must not stop the delivery."""
        try:
            await job.store.annotate(job.api, job.request_id, **{EXTRA_WEBHOOK: outcome})
        except ChuteError as exc:
            log.warning(
                "webhook outcome not recorded",
                extra={"api": job.api, "request_id": job.request_id, "error": str(exc)},
            )

    def _count(self, outcome: str) -> None:
        if self._observe is not None:
            self._observe(outcome)
