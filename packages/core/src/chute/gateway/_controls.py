"""The request headers the gateway reads at submit and keeps from the container.

* ``X-Chute-Queue-Timeout: <seconds>``: the request's queue deadline (docs/deadlines.md);
* ``X-Chute-Execution-Timeout: <seconds>``: its execution timeout;
* ``X-Chute-Webhook: <url>``: its webhook, instead of the API's (docs/webhooks.md);
* ``Idempotency-Key: <key>``: a repeat returns the first request's id (docs/idempotency.md).

Every ``X-Chute-*`` header is the gateway's: none reaches the container, whether the gateway
knows it or not, so future controls never leak into containers written today.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from chute.gateway._numbers import NumberError, parse_seconds
from chute.protocol import EXECUTION_TIMEOUT_HEADER, QUEUE_TIMEOUT_HEADER, WEBHOOK_HEADER

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The longest Idempotency-Key accepted (as Stripe's).
MAX_IDEMPOTENCY_KEY = 255
#: Header names reserved for the gateway (lower case prefix).
RESERVED_PREFIX = "x-chute-"
#: The largest timeout a header may ask for: a year (anything longer is a typo).
MAX_TIMEOUT = 365 * 24 * 3600.0

_QUEUE = QUEUE_TIMEOUT_HEADER.lower()
_EXECUTION = EXECUTION_TIMEOUT_HEADER.lower()
_WEBHOOK = WEBHOOK_HEADER.lower()
_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower()
_URL = re.compile(r"^https?://[^/\s?#]+(?:[/?#]\S*)?$", re.IGNORECASE)


class ControlError(ValueError):
    """A control header's value is invalid; the message names the header (400)."""


@dataclass(frozen=True)
class Controls:
    """What the control headers of one submit asked for."""

    queue_timeout: float | None = None
    execution_timeout: float | None = None
    webhook_url: str | None = None
    idempotency_key: str | None = None


def is_control(name: str) -> bool:
    """Whether a (lower-case) header is read by the gateway and not forwarded."""
    return name.startswith(RESERVED_PREFIX) or name == _IDEMPOTENCY


def _seconds(header: str, value: str) -> float:
    try:
        return parse_seconds(value, maximum=MAX_TIMEOUT, header=True)
    except NumberError as exc:
        raise ControlError(f"{header}: {exc}") from None


def validate_idempotency_key(key: str) -> str:
    """``key`` if it is 1..255 printable ASCII characters, else ControlError."""
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not all(" " <= ch <= "~" for ch in key):
        raise ControlError(
            f"{IDEMPOTENCY_HEADER}: expected 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return key


def idempotent_id(api: str, key: str) -> str:
    """The request id for ``key`` at ``api``: the same for every gateway replica and every
    repeat, and a UUID like every other id — version 8 (RFC 9562's custom layout) holding 122
    bits of SHA-256 over the API and the key. (chute 0.1 derived ``idem-…`` ids; those stay
    readable, but a key first used before the upgrade gets a new id after it.)"""
    digest = hashlib.sha256(f"{api}\n{key}".encode()).digest()
    value = int.from_bytes(digest[:16])
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8
    value = (value & ~(0b11 << 62)) | (0b10 << 62)  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def parse_controls(headers: list[tuple[str, str]]) -> Controls:
    """The controls among ``headers`` (lower-case names). Raises ControlError for a bad value
    or a control given twice."""
    values: dict[str, str] = {}
    for name, value in headers:
        if name in (_QUEUE, _EXECUTION, _WEBHOOK, _IDEMPOTENCY):
            if name in values:
                raise ControlError(f"more than one {name} header")
            values[name] = value
    queue = values.get(_QUEUE)
    execution = values.get(_EXECUTION)
    webhook = values.get(_WEBHOOK)
    key = values.get(_IDEMPOTENCY)
    if webhook is not None and not _URL.match(webhook.strip()):
        raise ControlError(f"{WEBHOOK_HEADER}: expected an http:// or https:// URL")
    return Controls(
        queue_timeout=None if queue is None else _seconds(QUEUE_TIMEOUT_HEADER, queue),
        execution_timeout=(
            None if execution is None else _seconds(EXECUTION_TIMEOUT_HEADER, execution)
        ),
        webhook_url=None if webhook is None else webhook.strip(),
        idempotency_key=None if key is None else validate_idempotency_key(key),
    )
