"""The wire protocol: statuses, the request record, responses and header names.

The submit and result responses are shaped exactly as Cortex's async gateway shapes them
(``{"id"}`` and ``{"id", "status", "result", "timestamp"}``); chute's extensions add fields and
never change these.
"""

from __future__ import annotations

import enum
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from chute.errors import InvalidAPIName, InvalidRequestId

#: Header carrying the request id to the user's container (Cortex's name, kept as is).
REQUEST_ID_HEADER = "X-Cortex-Request-ID"

#: Per-request overrides, read by the gateway at submit (docs/deadlines.md, docs/webhooks.md):
#: seconds the request may wait in the queue (stored as ``RequestRecord.queue_deadline``) ...
QUEUE_TIMEOUT_HEADER = "X-Chute-Queue-Timeout"
#: ... seconds the container call may take (``RequestRecord.timeout``) ...
EXECUTION_TIMEOUT_HEADER = "X-Chute-Execution-Timeout"
#: ... and the URL that gets this request's webhook (``RequestRecord.extra["webhook_url"]``).
WEBHOOK_HEADER = "X-Chute-Webhook"

#: Keys of ``RequestRecord.extra`` shared by the gateway and the dequeuer.
EXTRA_WEBHOOK_URL = "webhook_url"  # the per-request webhook URL
EXTRA_WEBHOOK = "webhook"  # the last webhook delivery's outcome, shown in GET
EXTRA_DEAD_LETTERED = "dead_lettered"  # the message went to the dead letter when it failed

#: Request headers that never reach the container: hop-by-hop headers and ones the HTTP
#: client recomputes for the new connection.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
MAX_ID_LENGTH = 128
_API_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # with fullmatch
MAX_API_NAME_LENGTH = 128


class Status(enum.StrEnum):
    """A request's place in its life. See docs/statuses.md for the state machine."""

    IN_QUEUE = "in_queue"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.EXPIRED})


class _RandomPool:
    """Bytes from the OS's CSPRNG drawn a few KiB at a time: one ``getrandom`` call serves
    hundreds of ids instead of one each (a syscall per submit showed in the gateway's profile).
    Rebuilt after ``fork`` so that two processes never hand out the same bytes."""

    _SIZE = 4096

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0
        self._pid = os.getpid()

    def take(self, n: int) -> bytes:
        end = self._offset + n
        if end > len(self._buffer) or self._pid != os.getpid():
            self._buffer, self._offset, self._pid = os.urandom(self._SIZE), 0, os.getpid()
            end = n
        chunk = self._buffer[self._offset : end]
        self._offset = end
        return chunk


_random = _RandomPool()


def new_request_id() -> str:
    """A fresh request id: a UUID version 7 (RFC 9562), as Cortex's ids were UUIDs (clients in
    the wild parse them). Its first 48 bits are the Unix time in milliseconds, so ids sort by
    submission time; the other 74 bits not taken by the version and variant are random, so
    ids cannot be guessed from one another. (``uuid.uuid7`` arrives only in Python 3.14.)"""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random.take(10))  # 80 bits; 74 are used
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    h = f"{value:032x}"  # as str(uuid.UUID(int=value)) spells it, without building one
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def validate_request_id(request_id: str) -> str:
    """Return ``request_id`` if it is safe to put in a storage key, else raise InvalidRequestId.

    Safe means: 1..128 characters of ``[A-Za-z0-9_-]``, not starting with ``-`` or ``_`` (so no
    path separators, no dots, no traversal, nothing that needs quoting in a URL or a key).
    """
    if not isinstance(request_id, str) or not _ID_PATTERN.match(request_id):
        raise InvalidRequestId(
            f"invalid request id {request_id!r}: expected 1 to {MAX_ID_LENGTH} characters "
            "of letters, digits, '-' and '_', starting with a letter or digit"
        )
    return request_id


def validate_api_name(api: str) -> str:
    """Return ``api`` if it is safe to put in a storage key or queue name, else raise
    InvalidAPIName.

    Safe means: 1..128 characters of ``[A-Za-z0-9._-]``, starting with a letter or digit (so
    no path separators, no traversal, no ``{}`` hash tags, nothing that needs quoting). Every
    valid ``api.yaml`` name passes; a backend with stricter names (SQS: no dots) checks more.
    """
    if not isinstance(api, str) or not _API_NAME_PATTERN.fullmatch(api):
        raise InvalidAPIName(
            f"API name {api!r} cannot be used in a storage key: expected 1 to "
            f"{MAX_API_NAME_LENGTH} letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return api


def now() -> float:
    """Wall-clock seconds since the epoch; every timestamp in a record uses it."""
    return time.time()


def rfc3339(timestamp: float) -> str:
    """Format epoch seconds the way Cortex did (``2021-07-19T10:48:33Z``), with milliseconds."""
    dt = datetime.fromtimestamp(timestamp, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a request failed: a machine-readable ``type`` and a human ``message``, plus what the
    container answered, when it answered."""

    type: str
    message: str
    status_code: int | None = None
    body: str | None = None


class RequestRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """Everything the store keeps about one request except its payload and result bytes.

    ``attempt`` is the delivery attempt that last moved the record (the fencing token): a store
    accepts a transition only for the current attempt or a newer one (see ``chute.lifecycle``).
    """

    id: str
    api: str
    status: Status
    created_at: float
    expires_at: float
    content_type: str | None = None
    headers: list[tuple[str, str]] = []
    payload_size: int = 0
    attempt: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    queue_deadline: float | None = None
    timeout: float | None = None
    cancel_requested: bool = False
    extra: dict[str, Any] = {}


#: ``RequestRecord.extra`` key of a completed request's result type, when it is not JSON (an
#: API with ``results.content_type: any``): the result is bytes, read at ``…/<id>/result``.
EXTRA_RESULT_TYPE = "result_type"
#: The path under a request where its result's bytes are served.
RESULT_SUFFIX = "/result"


class SubmitResponse(msgspec.Struct, frozen=True):
    """``POST /<api>`` → ``{"id": "..."}``, as Cortex answers."""

    id: str


class ResultResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """``GET /<api>/<id>``: Cortex's ``id``, ``status``, ``result``, ``timestamp``, then chute's
    extensions (timestamps of the request's life, attempts, a failure's reason)."""

    id: str
    status: str
    result: Any = msgspec.UNSET
    #: Where a result that is not JSON is read (``<endpoint>/<id>/result``), and its type.
    result_url: str | msgspec.UnsetType = msgspec.UNSET
    result_type: str | msgspec.UnsetType = msgspec.UNSET
    timestamp: str | msgspec.UnsetType = msgspec.UNSET
    created_at: str | msgspec.UnsetType = msgspec.UNSET
    started_at: str | msgspec.UnsetType = msgspec.UNSET
    finished_at: str | msgspec.UnsetType = msgspec.UNSET
    attempts: int | msgspec.UnsetType = msgspec.UNSET
    error: ErrorInfo | msgspec.UnsetType = msgspec.UNSET
    #: The last webhook delivery: ``{"event", "status", "attempts", "status_code"?,
    #: "error"?, "last_attempt_at"}`` (docs/webhooks.md).
    webhook: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


def result_response(
    record: RequestRecord, result: Any = msgspec.UNSET, *, endpoint: str | None = None
) -> ResultResponse:
    """Build the ``GET`` answer for a record (and its decoded result, once completed). A
    result that is not JSON is not inlined: ``result_url`` (under ``endpoint``) and
    ``result_type`` say where to read it and what it is."""

    def ts(value: float | None) -> str | msgspec.UnsetType:
        return msgspec.UNSET if value is None else rfc3339(value)

    completed = record.status is Status.COMPLETED
    result_type = record.extra.get(EXTRA_RESULT_TYPE) if completed else None
    result_url: str | msgspec.UnsetType = msgspec.UNSET
    if result_type is not None:
        result = msgspec.UNSET
        if endpoint is not None:
            result_url = f"{endpoint.rstrip('/')}/{record.id}{RESULT_SUFFIX}"
    return ResultResponse(
        id=record.id,
        status=record.status.value,
        result=result if completed else msgspec.UNSET,
        result_url=result_url,
        result_type=result_type if isinstance(result_type, str) else msgspec.UNSET,
        timestamp=ts(record.finished_at) if completed else msgspec.UNSET,
        created_at=ts(record.created_at),
        started_at=ts(record.started_at),
        finished_at=ts(record.finished_at),
        attempts=record.attempt,
        error=record.error if record.error is not None else msgspec.UNSET,
        webhook=record.extra.get(EXTRA_WEBHOOK, msgspec.UNSET),
    )


class ErrorBody(msgspec.Struct, frozen=True):
    type: str
    message: str


class ErrorResponse(msgspec.Struct, frozen=True):
    """Every HTTP error chute answers: ``{"error": {"type", "message"}}``."""

    error: ErrorBody


record_encoder = msgspec.json.Encoder()
record_decoder = msgspec.json.Decoder(RequestRecord)
