"""What a ``gs://`` URL says: the bucket, chute's object prefix, and options.

``gs://bucket[/prefix][?project=…&endpoint_url=…&timeout=…&retries=…&chunk_size=…&
max_payload_size=…]``. The endpoint is ``endpoint_url`` if given, else ``$STORAGE_EMULATOR_HOST``
(the variable Google's own clients honour), else the real service; an emulator endpoint gets no
credentials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from chute.backends.urls import (
    Option,
    bucket_url,
    http_url,
    non_negative_int,
    parse_options,
    positive_seconds,
    size,
    text,
)
from chute.errors import ConfigError

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


#: Query parameters a ``gs://`` URL may carry: what each one means (for errors), how it is read.
QUERY_PARAMETERS: Final[dict[str, Option[Any]]] = {
    "project": Option(
        "Google Cloud project that `chute storage init` creates a missing bucket in", text()
    ),
    "endpoint_url": Option(
        "JSON API endpoint, e.g. an emulator (default $STORAGE_EMULATOR_HOST, else "
        "https://storage.googleapis.com)",
        http_url(),
    ),
    "timeout": Option(
        "seconds one HTTP request may take before it counts as unavailable (default 30)",
        positive_seconds(),
    ),
    "retries": Option(
        "retries of a request that failed with 429, 5xx or a network error (default 5)",
        non_negative_int(),
    ),
    "chunk_size": Option(
        "bytes per resumable-upload chunk, a multiple of 256 KiB (default 8 MiB); smaller "
        "payloads go in one multipart upload",
        size(minimum=CHUNK_GRANULE, multiple_of=CHUNK_GRANULE),
    ),
    "max_payload_size": Option(
        "largest payload the store accepts, in bytes or as 16Mi (default: no limit)", size()
    ),
}


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
    bucket, path = bucket_url(
        url,
        scheme="gs",
        label="a GCS URL",
        example="gs://bucket/prefix",
        bucket_name=_BUCKET,
        bucket_rule="3 to 222 lowercase letters, digits, '-', '_' or '.', starting and ending "
        "with a letter or digit",
    )
    values: dict[str, Any] = {"bucket": bucket}
    segments = [unquote(s) for s in path.split("/") if s]
    if segments:
        bad = [s for s in segments if not _PREFIX_PART.match(s) or s in (".", "..")]
        if bad:
            raise ConfigError(
                f"GCS URL {url!r}: prefix segment {bad[0]!r} is not allowed "
                "(use letters, digits, '.', '_' and '-')"
            )
        values["prefix"] = "/".join(segments)
    values.update(parse_options(url, QUERY_PARAMETERS, label="GCS URL"))
    endpoint = values.pop("endpoint_url", None)
    if endpoint is None:
        env = os.environ.get(EMULATOR_ENV, "").strip()
        if env:
            endpoint = _emulator_host(url, env if "://" in env else f"http://{env}")
    if endpoint is not None:
        values["endpoint"] = endpoint
        values["emulator"] = True
    return GcsSettings(**values)


def _emulator_host(url: str, raw: str) -> str:
    try:
        return http_url()(raw)
    except ValueError as exc:
        raise ConfigError(f"GCS URL {url!r}: ${EMULATOR_ENV} {raw!r}: {exc}") from exc
