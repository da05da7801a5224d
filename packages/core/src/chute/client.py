"""The Python client for a chute gateway: :class:`Client` (sync) and :class:`AsyncClient`.

Both submit requests to an Async API, read them and wait for them to finish, over one pooled
httpx connection pool per client. With no ``base_url`` they find the gateway the way Cortex's
in-container client did (see :func:`gateway_url`), so a container can chain APIs with
``chute.Client()`` and nothing else. See docs/client.md.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx
import msgspec

from chute._version import __version__
from chute.backoff import Backoff
from chute.closing import AsyncClosing, Closing
from chute.config import API
from chute.errors import (
    APIError,
    ConfigError,
    GatewayUnreachable,
    ProtocolError,
    VersionMismatchWarning,
    WaitTimeout,
)
from chute.protocol import (
    RESULT_SUFFIX,
    ErrorInfo,
    ErrorResponse,
    Status,
    SubmitResponse,
    validate_request_id,
)

#: Where the gateway is when nothing says otherwise (``chute dev`` and ``chute gateway``).
DEFAULT_GATEWAY_URL = "http://127.0.0.1:8888"
#: Seconds for connect, read and write of one HTTP call (large uploads need room).
DEFAULT_TIMEOUT = 60.0
#: The longest long-poll the gateway accepts (``GET …?wait=``), in seconds.
MAX_WAIT = 60.0
#: With ``on_status``, ``wait`` holds each long-poll at most this long (seconds).
PROGRESS_WAIT = 1.0
#: The environment variable :class:`Client` takes its API key from when not given one.
API_KEY_ENV = "CHUTE_API_KEY"

ApiRef = str | API
#: Called by ``wait`` with each status the request is seen in (the first one too).
StatusCallback = Callable[["Result"], None]


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The last webhook delivery of a request (docs/webhooks.md): ``status`` is ``pending``
    (another attempt is scheduled), ``delivered`` or ``failed``."""

    event: str
    status: str
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None
    last_attempt_at: datetime | None = None


class Result(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A request as the gateway reports it (``GET <endpoint>/<id>``): every field it sends.

    ``result`` and ``timestamp`` are set once ``status`` is ``completed``; ``error`` says why
    a ``failed`` request failed; ``webhook`` is the last webhook delivery, for an API or a
    request with a webhook. Timestamps are timezone-aware datetimes (UTC).
    """

    id: str
    status: Status
    result: Any = None
    #: For a result that is not JSON (``results.content_type: any``): where its bytes are
    #: read (:meth:`Client.result_bytes`) and their type; ``result`` is then None.
    result_url: str | None = None
    result_type: str | None = None
    timestamp: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: ErrorInfo | None = None
    webhook: WebhookDelivery | None = None

    @property
    def done(self) -> bool:
        """True once the request is terminal (completed, failed, cancelled or expired)."""
        return self.status.terminal


class ResultBytes(NamedTuple):
    """A completed request's result as the container answered it (``GET …/<id>/result``)."""

    content: bytes
    content_type: str


class Answer(NamedTuple):
    """A decoded answer and the bytes the gateway sent."""

    result: Result
    body: bytes


class _CortexEnvironment(msgspec.Struct):
    name: str
    operator_endpoint: str | None = None


class _CortexCLIConfig(msgspec.Struct):
    default_environment: str = "default"
    environments: list[_CortexEnvironment] = []


def gateway_url(base_url: str | None = None) -> str:
    """The gateway's URL: ``base_url`` if given, else ``$CHUTE_GATEWAY_URL``, else the
    ``operator_endpoint`` of the default environment in Cortex's client config file
    ``$CORTEX_CLI_CONFIG_DIR/cli.yaml`` (mounted into every container), else
    ``http://127.0.0.1:8888``.

    When the URL is discovered (no ``base_url``), a :class:`~chute.errors.VersionMismatchWarning`
    is issued if ``$CORTEX_VERSION`` names another version than this chute's.
    """
    if base_url:
        return base_url
    cortex_version = os.environ.get("CORTEX_VERSION")
    if cortex_version and cortex_version.lstrip("v") != __version__:
        warnings.warn(
            f"the cluster runs version {cortex_version} (CORTEX_VERSION) but this client is "
            f"chute {__version__}; install the matching version",
            VersionMismatchWarning,
            stacklevel=3,
        )
    from_env = os.environ.get("CHUTE_GATEWAY_URL")
    if from_env:
        return from_env
    config_dir = os.environ.get("CORTEX_CLI_CONFIG_DIR")
    if config_dir:
        endpoint = _endpoint_from_cortex_config(Path(config_dir) / "cli.yaml")
        if endpoint:
            return endpoint
    return DEFAULT_GATEWAY_URL


def _endpoint_from_cortex_config(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Cortex client config: {exc}") from exc
    try:
        config = msgspec.yaml.decode(data, type=_CortexCLIConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: invalid Cortex client config: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    for env in config.environments:
        if env.name == config.default_environment:
            return env.operator_endpoint
    return None


def api_path(api: ApiRef) -> str:
    """The route of an API: ``"name"`` → ``/name``; ``"/v1/x/"`` (an endpoint) → ``/v1/x``;
    an :class:`~chute.config.API` → its ``endpoint``."""
    if isinstance(api, API):
        return api.endpoint
    if not api:
        raise ValueError("an API name or endpoint is required")
    return "/" + api.strip("/")


def poll_delays(first: float, maximum: float, factor: float = 1.5) -> Iterator[float]:
    """Delays between polls: ``first``, growing by ``factor`` up to ``maximum``."""
    return Backoff(first=first, cap=maximum, factor=factor, jitter="none").delays()


_result_decoder = msgspec.json.Decoder(Result)
_submit_decoder = msgspec.json.Decoder(SubmitResponse)
_error_decoder = msgspec.json.Decoder(ErrorResponse)


_overview_decoder = msgspec.json.Decoder(dict[str, Any])


def _check(response: httpx.Response) -> None:
    """Raise :class:`APIError` for an HTTP error, with the gateway's error type and message."""
    if response.status_code < 400:
        return
    try:
        body = _error_decoder.decode(response.content).error
        kind, message = body.type, body.message
    except msgspec.DecodeError:  # not a chute gateway (a proxy's error page, ...)
        kind = "http_error"
        message = response.text[:500] or response.reason_phrase
    raise APIError(response.status_code, kind, message)


def _decode(decoder: msgspec.json.Decoder[Any], response: httpx.Response) -> Any:
    _check(response)
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:
        raise ProtocolError(
            f"unexpected answer from the gateway at {response.request.url}: {exc}"
        ) from None


def _submit_args(
    json: Any, content: Any, headers: Mapping[str, str] | None, idempotency_key: str | None
) -> tuple[Any, dict[str, str]]:
    if json is not None and content is not None:
        raise ValueError("pass json= or content=, not both")
    merged = dict(headers or {})
    if idempotency_key is not None:
        merged["Idempotency-Key"] = idempotency_key
    if json is not None:
        content = msgspec.json.encode(json)
        if not any(k.lower() == "content-type" for k in merged):
            merged["Content-Type"] = "application/json"
    return content, merged


def _unreachable(base_url: str, exc: httpx.TransportError) -> GatewayUnreachable:
    return GatewayUnreachable(f"cannot reach the gateway at {base_url}: {exc!r}")


class _Base:
    def __init__(
        self, base_url: str | None, headers: Mapping[str, str] | None, api_key: str | None
    ) -> None:
        self.base_url = gateway_url(base_url).rstrip("/")
        self._headers = {"User-Agent": f"chute/{__version__}", **(headers or {})}
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if key and not any(name.lower() == "authorization" for name in self._headers):
            self._headers["Authorization"] = f"Bearer {key}"

    @staticmethod
    def _path(api: ApiRef, request_id: str) -> str:
        return f"{api_path(api).rstrip('/')}/{validate_request_id(request_id)}"


class _Wait:
    """The long-poll loop of ``wait``: ``GET …?wait=`` of at most :data:`MAX_WAIT` seconds,
    again and again, until the request is terminal or the whole wait's deadline passes.

    A gateway that does not long-poll (older chute, Cortex) answers at once: then the loop
    sleeps between calls, backing off from ``poll_interval`` to ``max_poll_interval``.
    """

    def __init__(
        self,
        request_id: str,
        timeout: float | None,
        read_timeout: float | None,
        poll_interval: float,
        max_poll_interval: float,
        progress: bool = False,
    ) -> None:
        self.request_id = request_id
        #: Following progress (``on_status``): look at once, then hold each call at most a
        #: second, so that a status change shows within a second rather than only the end.
        self.step = PROGRESS_WAIT if progress else MAX_WAIT
        self.first = progress
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.read_timeout = read_timeout
        self.delays = poll_delays(poll_interval, max_poll_interval)
        self.asked = 0.0
        self.started = 0.0

    def next_call(self, last: Result | None) -> tuple[dict[str, str], float | None]:
        """The query and the read timeout of the next call; WaitTimeout when time is up."""
        if self.first:
            self.first = False
            self.asked = 0.0
            self.started = time.monotonic()
            return {}, self.read_timeout
        seconds = self.step
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 and last is not None:
                raise WaitTimeout(
                    f"request {self.request_id} is still {last.status.value} after the wait's "
                    "timeout"
                )
            seconds = min(self.step, max(remaining, 0.001))
        self.asked = seconds
        self.started = time.monotonic()
        read = None if self.read_timeout is None else self.read_timeout + seconds
        return {"wait": f"{seconds:.3f}"}, read

    def pause(self) -> float:
        """Seconds to sleep before the next call: none after a real long-poll, a backed-off
        delay after an answer that came back well before the wait it asked for."""
        if time.monotonic() - self.started >= self.asked / 2:
            return 0.0
        delay = next(self.delays)
        if self.deadline is not None:
            delay = min(delay, max(self.deadline - time.monotonic(), 0.0))
        return delay


def _timeout_with_read(base: httpx.Timeout, read: float | None) -> httpx.Timeout:
    return httpx.Timeout(connect=base.connect, read=read, write=base.write, pool=base.pool)


class AsyncClient(_Base, AsyncClosing):
    """Submit to and read from a chute gateway, asynchronously (one pooled httpx client).

    ``base_url`` defaults as :func:`gateway_url` explains; ``headers`` are sent with every
    call. ``api_key`` (default: ``$CHUTE_API_KEY``) is sent as ``Authorization: Bearer <key>``
    for a gateway with API keys. Use it as ``async with AsyncClient() as client: ...`` or
    call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, headers, api_key)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=self._headers
        )

    async def submit(
        self,
        api: ApiRef,
        *,
        json: Any = None,
        content: bytes | str | AsyncIterable[bytes] | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue a request to ``api`` (a name, an endpoint path or an API) and return its id.

        ``json`` is encoded as JSON (``Content-Type: application/json``); ``content`` is sent
        as is (bytes, or an iterator of chunks, streamed). ``headers`` reach the container
        (except the gateway's own ``X-Chute-*`` controls). With ``idempotency_key``, a repeat
        with the same key and body returns the first request's id and queues nothing (a
        different body raises APIError 409): safe to retry after a network error.
        """
        body, merged = _submit_args(json, content, headers, idempotency_key)
        try:
            response = await self._http.post(api_path(api), content=body, headers=merged)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        submitted: SubmitResponse = _decode(_submit_decoder, response)
        return submitted.id

    async def get(self, api: ApiRef, request_id: str) -> Result:
        """The request's current status (and its result once completed)."""
        try:
            response = await self._http.get(self._path(api, request_id))
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        result: Result = _decode(_result_decoder, response)
        return result

    async def result_bytes(self, api: ApiRef, request_id: str) -> ResultBytes:
        """A completed request's result, its bytes and type, whatever the type (docs/results.md).
        A request not yet completed raises APIError 409; an unknown one 404."""
        try:
            response = await self._http.get(self._path(api, request_id) + RESULT_SUFFIX)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        _check(response)
        return ResultBytes(response.content, response.headers.get("content-type", ""))

    async def cancel(self, api: ApiRef, request_id: str) -> Result:
        """Cancel a queued or running request (``DELETE``) and return it, ``cancelled``.
        A finished request raises APIError 409 (``conflict``); an unknown one 404."""
        try:
            response = await self._http.delete(self._path(api, request_id))
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        result: Result = _decode(_result_decoder, response)
        return result

    async def wait(
        self,
        api: ApiRef,
        request_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the deadline of the whole wait)
        poll_interval: float = 0.1,
        max_poll_interval: float = 2.0,
        on_status: StatusCallback | None = None,
    ) -> Result:
        """Wait until the request is terminal and return it (check ``.status``: a failed
        request is returned, not raised), with long-polls (``GET …?wait=``) that the gateway
        answers the moment the request ends. Raises :class:`~chute.errors.WaitTimeout` after
        ``timeout`` seconds (None: wait for as long as it takes). ``poll_interval`` and
        ``max_poll_interval`` pace the calls only against a gateway that does not long-poll.
        ``on_status`` is called with the request each time its status is seen to change
        (and with the first status seen)."""
        path = self._path(api, request_id)
        loop = _Wait(
            request_id,
            timeout,
            self._http.timeout.read,
            poll_interval,
            max_poll_interval,
            progress=on_status is not None,
        )
        last: Result | None = None
        while True:
            params, read = loop.next_call(last)
            try:
                response = await self._http.get(
                    path, params=params, timeout=_timeout_with_read(self._http.timeout, read)
                )
            except httpx.TransportError as exc:
                raise _unreachable(self.base_url, exc) from exc
            current: Result = _decode(_result_decoder, response)
            if on_status is not None and (last is None or current.status != last.status):
                on_status(current)
            last = current
            if last.done:
                return last
            await anyio.sleep(loop.pause())

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


class Client(_Base, Closing):
    """The synchronous twin of :class:`AsyncClient`, with the same methods and defaults.

    Use it as ``with Client() as client: ...`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        super().__init__(base_url, headers, api_key)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=self._headers)

    def submit(
        self,
        api: ApiRef,
        *,
        json: Any = None,
        content: bytes | str | Iterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue a request to ``api`` and return its id (see :meth:`AsyncClient.submit`)."""
        body, merged = _submit_args(json, content, headers, idempotency_key)
        try:
            response = self._http.post(api_path(api), content=body, headers=merged)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        submitted: SubmitResponse = _decode(_submit_decoder, response)
        return submitted.id

    def get(self, api: ApiRef, request_id: str) -> Result:
        """The request's current status (and its result once completed)."""
        return self._get_answer(api, request_id).result

    def result_bytes(self, api: ApiRef, request_id: str) -> ResultBytes:
        """A completed request's result: bytes and type (:meth:`AsyncClient.result_bytes`)."""
        try:
            response = self._http.get(self._path(api, request_id) + RESULT_SUFFIX)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        _check(response)
        return ResultBytes(response.content, response.headers.get("content-type", ""))

    def cancel(self, api: ApiRef, request_id: str) -> Result:
        """Cancel a queued or running request (see :meth:`AsyncClient.cancel`)."""
        return self._cancel_answer(api, request_id).result

    def overview(self) -> dict[str, Any]:
        """The dashboard's overview of every API (``GET /ui/api/overview``): queue depth and
        recent rates, as ``chute status`` shows them (docs/dashboard.md). On a gateway with
        ``--protect-admin`` the client's key must be a global one."""
        try:
            response = self._http.get("/ui/api/overview")
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        answer: dict[str, Any] = _decode(_overview_decoder, response)
        return answer

    # The answers with the gateway's own bytes, for the CLI (it prints them unchanged).

    def _get_answer(self, api: ApiRef, request_id: str) -> Answer:
        try:
            response = self._http.get(self._path(api, request_id))
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return Answer(_decode(_result_decoder, response), response.content)

    def _cancel_answer(self, api: ApiRef, request_id: str) -> Answer:
        try:
            response = self._http.delete(self._path(api, request_id))
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return Answer(_decode(_result_decoder, response), response.content)

    def wait(
        self,
        api: ApiRef,
        request_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.1,
        max_poll_interval: float = 2.0,
        on_status: StatusCallback | None = None,
    ) -> Result:
        """Wait until the request is terminal and return it, with long-polls (see
        :meth:`AsyncClient.wait`)."""
        return self._wait_answer(
            api,
            request_id,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            on_status=on_status,
        ).result

    def _wait_answer(
        self,
        api: ApiRef,
        request_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.1,
        max_poll_interval: float = 2.0,
        on_status: StatusCallback | None = None,
    ) -> Answer:
        path = self._path(api, request_id)
        loop = _Wait(
            request_id,
            timeout,
            self._http.timeout.read,
            poll_interval,
            max_poll_interval,
            progress=on_status is not None,
        )
        last: Result | None = None
        while True:
            params, read = loop.next_call(last)
            try:
                response = self._http.get(
                    path, params=params, timeout=_timeout_with_read(self._http.timeout, read)
                )
            except httpx.TransportError as exc:
                raise _unreachable(self.base_url, exc) from exc
            current: Result = _decode(_result_decoder, response)
            if on_status is not None and (last is None or current.status != last.status):
                on_status(current)
            last = current
            if last.done:
                return Answer(last, response.content)
            time.sleep(loop.pause())

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
