"""A backend URL's query options, checked against the options the backend knows.

Every backend URL carries options after ``?`` (``redis://host/0?prefix=x&timeout=5``). They are
parsed the same strict way everywhere: an unknown option is an error that lists the known ones
with what each means (a typo must not silently fall back to a default), an option given twice
is an error, and each value is checked by its option's validator, whose complaint names the
option and the value.

    SCHEMA = {
        "timeout": Option("seconds one call may take (default 10)", positive_seconds()),
        "create": Option("create missing queues (default true)", boolean()),
    }
    options = parse_options(url, SCHEMA, label="Redis URL")
    timeout = options.get("timeout", 10.0)

A validator is any ``Callable[[str], T]`` that returns the typed value or raises ValueError
saying what is wrong; the factories below cover the common kinds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit

from chute.errors import ConfigError

__all__ = [
    "Option",
    "boolean",
    "bucket_url",
    "choice",
    "duration",
    "http_url",
    "int_between",
    "matching",
    "non_negative_int",
    "parse_options",
    "positive_seconds",
    "redact",
    "size",
    "text",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Option(Generic[T]):
    """One query option: what it means (shown when an unknown option is named) and how its
    value is read."""

    help: str
    validator: Callable[[str], T]


def parse_options(
    url: str, schema: Mapping[str, Option[Any]], *, label: str = "URL"
) -> dict[str, Any]:
    """The options in ``url``'s query, each read by its validator: ``{name: value}`` for the
    options present (absent ones are left out, so defaults stay with the caller).

    Raises ConfigError, naming ``label`` and the URL (its password hidden), for an unknown
    option (listing the known ones), an option given twice, or a value its validator refuses.
    """
    shown = f"{label} {redact(url)!r}"
    values: dict[str, Any] = {}
    for name, raw in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        option = schema.get(name)
        if option is None:
            known = "; ".join(f"{key}: {o.help}" for key, o in schema.items()) or "none"
            raise ConfigError(f"{shown}: unknown parameter {name!r}; known parameters: {known}")
        if name in values:
            raise ConfigError(f"{shown}: parameter {name!r} is given more than once")
        try:
            values[name] = option.validator(raw)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{shown}: parameter {name!r}: bad value {raw!r}: {exc}") from exc
    return values


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


# --- validators ------------------------------------------------------------------------------


def non_negative_int() -> Callable[[str], int]:
    """A whole number, 0 or more (``retries``, ``health_check_interval``)."""
    return int_between(0, None)


def int_between(lowest: int, highest: int | None) -> Callable[[str], int]:
    """A whole number from ``lowest`` to ``highest`` (None: no upper bound)."""

    def validate(raw: str) -> int:
        if not raw.isascii() or not raw.isdigit():
            raise ValueError("must be a whole number")
        number = int(raw)
        if number < lowest or (highest is not None and number > highest):
            bound = f"at least {lowest}" if highest is None else f"{lowest} to {highest}"
            raise ValueError(f"must be {bound}")
        return number

    return validate


def positive_seconds() -> Callable[[str], float]:
    """A positive, finite number of seconds (``timeout=2.5``)."""

    def validate(raw: str) -> float:
        try:
            seconds = float(raw)
        except ValueError:
            raise ValueError("must be a positive number of seconds") from None
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError("must be a positive number of seconds")
        return seconds

    return validate


def duration() -> Callable[[str], float]:
    """A positive duration in seconds: a number of seconds, whole days (``7d``) or a Go-style
    duration (``36h``, ``1h30m``, ``500ms``)."""

    def validate(raw: str) -> float:
        from chute.config import parse_duration  # chute.config is heavier; only when used

        if raw.endswith("d") and raw[:-1].isascii() and raw[:-1].isdigit():
            seconds = int(raw[:-1]) * 86400.0
        else:
            try:
                seconds = float(raw)
            except ValueError:
                seconds = parse_duration(raw)  # ConfigError names what is wrong
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError("must be a positive duration (90s, 36h, 7d)")
        return seconds

    return validate


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def boolean() -> Callable[[str], bool]:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``; any case)."""

    def validate(raw: str) -> bool:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("must be true or false")

    return validate


def http_url() -> Callable[[str], str]:
    """An ``http://`` or ``https://`` URL with a host; returned without a trailing slash."""

    def validate(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:4443")
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    return validate


def size(*, minimum: int = 0, multiple_of: int | None = None) -> Callable[[str], int]:
    """A number of bytes: ``1048576`` or a quantity (``16Mi``, ``1G``), at least ``minimum``
    and, if given, a multiple of ``multiple_of``."""

    def validate(raw: str) -> int:
        from chute.config import parse_quantity

        if raw.isascii() and raw.isdigit():
            number = int(raw)
        else:
            try:
                quantity = parse_quantity(raw)
            except ConfigError:
                raise ValueError("must be a number of bytes, such as 1048576 or 16Mi") from None
            if quantity != quantity.to_integral_value() or quantity < 0:
                raise ValueError("must be a whole number of bytes")
            number = int(quantity)
        if multiple_of is not None and number % multiple_of:
            raise ValueError(f"must be a multiple of {multiple_of} bytes")
        if number < minimum:
            raise ValueError(f"must be at least {minimum} bytes")
        return number

    return validate


def choice(*allowed: str) -> Callable[[str], str]:
    """One of ``allowed`` (exactly)."""

    def validate(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"expected {', '.join(allowed[:-1])} or {allowed[-1]}")
        return raw

    return validate


def matching(pattern: str, description: str) -> Callable[[str], str]:
    """A string the regular expression ``pattern`` matches whole; ``description`` says what
    is allowed (``"letters, digits and . _ : - (at most 128)"``)."""
    compiled = re.compile(pattern)

    def validate(raw: str) -> str:
        if not compiled.fullmatch(raw):
            raise ValueError(f"expected {description}")
        return raw

    return validate


def text() -> Callable[[str], str]:
    """Any non-empty string (a project name, a file path)."""

    def validate(raw: str) -> str:
        if not raw:
            raise ValueError("must not be empty")
        return raw

    return validate


def bucket_url(
    url: str,
    *,
    scheme: str,
    label: str,
    example: str,
    bucket_name: re.Pattern[str],
    bucket_rule: str,
) -> tuple[str, str]:
    """Split an object-store URL ``<scheme>://<bucket>/<path>`` into the bucket and the path
    (without its leading ``/``), checking the scheme and the bucket's name; raise ConfigError
    naming what is wrong. ``label`` names the URL in messages ("an S3 URL"); ``example`` is
    the expected form; ``bucket_rule`` says what ``bucket_name`` accepts."""
    parts = urlsplit(url)
    if parts.scheme.lower() != scheme:
        raise ConfigError(f"not {label}: {url!r} (expected {example})")
    bucket = parts.netloc
    if not bucket_name.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"{label.split(' ', 1)[1]} {url!r}: {bucket!r} is not a bucket name ({bucket_rule})"
        )
    return bucket, parts.path.lstrip("/")
