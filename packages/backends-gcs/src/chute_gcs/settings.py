"""What a ``gs://`` URL says: the bucket, chute's object prefix, and options.

``gs://bucket[/prefix][?project=…&endpoint_url=…&timeout=…&retries=…&chunk_size=…&
max_payload_size=…]``. The endpoint is ``endpoint_url`` if given, else ``$STORAGE_EMULATOR_HOST``
(the variable Google's own clients honour), else the real service; an emulator endpoint gets no
credentials.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from chute.errors import ConfigError

#: Query parameters a ``gs://`` URL may carry, with what each one means (for errors).
QUERY_PARAMETERS: Final = {
    "project": "Google Cloud project that `chute storage init` creates a missing bucket in",
    "endpoint_url": "JSON API endpoint, e.g. an emulator (default $STORAGE_EMULATOR_HOST, "
    "else https://storage.googleapis.com)",
    "timeout": "seconds one HTTP request may take before it counts as unavailable (default 30)",
    "retries": "retries of a request that failed with 429, 5xx or a network error (default 5)",
    "chunk_size": "bytes per resumable-upload chunk, a multiple of 256 KiB (default 8 MiB); "
    "smaller payloads go in one multipart upload",
    "max_payload_size": "largest payload the store accepts, in bytes (default: no limit)",
}

GOOGLE_ENDPOINT = "https://storage.googleapis.com"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: Objects live under this prefix when the URL names none, so that the lifecycle rule chute
#: installs can never touch anything else in the bucket.
DEFAULT_PREFIX = "chute"
#: Resumable-upload chunks must be multiples of 256 KiB; Google recommends at least 8 MiB.
CHUNK_GRANULE = 256 * 1024
DEFAULT_CHUNK = 8 * 1024 * 1024

# Bucket names: 3-63 characters (222 with dots), lowercase letters, digits, '-', '_', '.'.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True)
class GcsSettings:
    """Everything a ``gs://`` URL says, with the endpoint resolved."""

    bucket: str
    prefix: str = DEFAULT_PREFIX
    project: str | None = None
    endpoint: str = GOOGLE_ENDPOINT
    #: True for an emulator (``endpoint_url`` or ``$STORAGE_EMULATOR_HOST``): no credentials.
    emulator: bool = False
    timeout: float = 30.0
    retries: int = 5
    chunk_size: int = DEFAULT_CHUNK
    max_payload_size: int | None = None

    @property
    def address(self) -> str:
        """Where the objects are, for messages."""
        where = "" if self.endpoint == GOOGLE_ENDPOINT else f" at {self.endpoint}"
        return f"gs://{self.bucket}/{self.prefix}{where}"

    @property
    def session_key(self) -> tuple[object, ...]:
        """What decides which HTTP session and credentials a URL uses."""
        return (self.endpoint, self.emulator)


def parse_url(url: str) -> GcsSettings:
    """Parse ``gs://bucket[/prefix][?…]``; raise ConfigError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "gs":
        raise ConfigError(f"not a GCS URL: {url!r} (expected gs://bucket/prefix)")
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"GCS URL {url!r}: {bucket!r} is not a bucket name (3 to 222 lowercase letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )
    values: dict[str, Any] = {"bucket": bucket}
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if segments:
        bad = [s for s in segments if not _PREFIX_PART.match(s) or s in (".", "..")]
        if bad:
            raise ConfigError(
                f"GCS URL {url!r}: prefix segment {bad[0]!r} is not allowed "
                "(use letters, digits, '.', '_' and '-')"
            )
        values["prefix"] = "/".join(segments)
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        values[name] = _query_value(url, name, raw)
    endpoint = values.pop("endpoint_url", None)
    if endpoint is None:
        env = os.environ.get(EMULATOR_ENV, "").strip()
        if env:
            endpoint = _endpoint(url, env if "://" in env else f"http://{env}", EMULATOR_ENV)
    if endpoint is not None:
        values["endpoint"] = endpoint
        values["emulator"] = True
    return GcsSettings(**values)


def _endpoint(url: str, raw: str, name: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"GCS URL {url!r}: {name} {raw!r} is not an http(s) URL")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _query_value(url: str, name: str, raw: str) -> object:
    where = f"GCS URL {url!r}, parameter {name!r}"
    if name not in QUERY_PARAMETERS:
        known = "; ".join(f"{k}: {v}" for k, v in QUERY_PARAMETERS.items())
        raise ConfigError(f"{where} is unknown; known parameters: {known}")
    try:
        if name == "project":
            if not raw:
                raise ValueError("must not be empty")
            return raw
        if name == "endpoint_url":
            return _endpoint(url, raw, name)
        if name == "timeout":
            seconds = float(raw)
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValueError("must be a positive number of seconds")
            return seconds
        number = int(raw)
        if number < 0:
            raise ValueError("must not be negative")
        if name == "chunk_size" and (number == 0 or number % CHUNK_GRANULE):
            raise ValueError(f"must be a positive multiple of {CHUNK_GRANULE} bytes (256 KiB)")
        return number
    except ValueError as exc:
        raise ConfigError(f"{where}: bad value {raw!r}: {exc}") from exc
