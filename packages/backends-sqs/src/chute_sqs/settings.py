"""What ``sqs://`` and ``s3://`` URLs say, checked before anything talks to AWS.

``sqs://<queue-prefix>?region=…&endpoint_url=…&create=true|false&retention=7d&max_receive_count=…``
``s3://<bucket>/<prefix>?region=…&endpoint_url=…&max_payload_size=…``

Credentials never appear in a URL: they come from the standard AWS chain (environment,
shared profile, container or instance metadata), exactly as the AWS CLI finds them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from chute.backends.base import DEFAULT_RETENTION
from chute.cli.storage import parse_retention
from chute.errors import ConfigError
from chute.protocol import validate_api_name

#: SQS keeps a message at most 14 days.
SQS_MAX_RETENTION: Final = 14 * 24 * 3600
#: SQS queue names: 1 to 80 letters, digits, hyphens and underscores.
SQS_MAX_NAME: Final = 80
DLQ_SUFFIX: Final = "-dlq"
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# S3 bucket naming rules (the common subset: lowercase DNS-style names, 3 to 63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]{1,512}$")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

SQS_PARAMETERS: Final = {
    "region": "AWS region (default: the AWS chain's region, us-east-1 with an endpoint_url)",
    "endpoint_url": "a non-AWS endpoint such as moto or LocalStack (http://127.0.0.1:5000)",
    "create": "create missing queues and their dead-letter queues (true, default) or require "
    "them (false)",
    "retention": "how long results are kept (7d by default); queues keep messages as long, "
    "up to SQS's 14 days",
    "max_receive_count": "deliveries after which SQS itself moves a message to the dead-letter "
    "queue (default 100; the dequeuer's own retry limit acts well before)",
}
S3_PARAMETERS: Final = {
    "region": SQS_PARAMETERS["region"],
    "endpoint_url": SQS_PARAMETERS["endpoint_url"],
    "max_payload_size": "largest payload the store accepts, in bytes (default: no limit of "
    "its own beyond S3's)",
}


@dataclass(frozen=True)
class AwsEndpoint:
    """Where a client connects: the region and, for moto/LocalStack, an explicit endpoint."""

    region: str | None = None
    endpoint_url: str | None = None

    def describe(self, service: str) -> str:
        """Where the service is, for messages."""
        if self.endpoint_url:
            return f"{service} at {self.endpoint_url}"
        return f"{service} in {self.region or 'the default region'}"


@dataclass(frozen=True)
class SqsSettings:
    """Everything an ``sqs://`` URL says."""

    prefix: str
    endpoint: AwsEndpoint
    create: bool = True
    retention: float = DEFAULT_RETENTION
    max_receive_count: int = 100

    @property
    def message_retention(self) -> int:
        """The queues' MessageRetentionPeriod: the result retention, within SQS's bounds."""
        return max(60, min(SQS_MAX_RETENTION, math.ceil(self.retention)))

    def queue_name(self, api: str) -> str:
        """The SQS queue of ``api``: ``<prefix>-<api>``."""
        name = f"{self.prefix}-{validate_api_name(api)}"
        # SQS names are stricter than chute's (no dots) and short.
        if not _SQS_NAME.match(api) or len(name) + len(DLQ_SUFFIX) > SQS_MAX_NAME:
            raise ConfigError(
                f"API name {api!r} cannot name an SQS queue with prefix {self.prefix!r}: "
                f"{name + DLQ_SUFFIX!r} must be at most {SQS_MAX_NAME} letters, digits, '-' "
                "or '_'"
            )
        return name

    def dlq_name(self, api: str) -> str:
        """The dead-letter queue of ``api``: ``<prefix>-<api>-dlq``."""
        return self.queue_name(api) + DLQ_SUFFIX


@dataclass(frozen=True)
class S3Settings:
    """Everything an ``s3://`` URL says."""

    bucket: str
    prefix: str
    endpoint: AwsEndpoint
    max_payload_size: int | None = None


def _query(url: str, known: dict[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, raw in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name not in known:
            listed = "; ".join(f"{k}: {v}" for k, v in known.items())
            raise ConfigError(f"URL {url!r}: unknown parameter {name!r}; known: {listed}")
        values[name] = raw
    return values


def _endpoint(url: str, values: dict[str, str]) -> AwsEndpoint:
    endpoint_url = values.get("endpoint_url") or None
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"URL {url!r}: endpoint_url must be an http(s) URL, not {endpoint_url!r}"
            )
    region = values.get("region") or None
    if region is not None and not re.match(r"^[a-z0-9-]{2,32}$", region):
        raise ConfigError(f"URL {url!r}: {region!r} is not an AWS region name")
    return AwsEndpoint(region=region, endpoint_url=endpoint_url)


def _flag(url: str, name: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"URL {url!r}: {name} must be true or false, not {raw!r}")


def parse_sqs_url(url: str) -> SqsSettings:
    """Parse ``sqs://<queue-prefix>?…``; raise ConfigError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqs":
        raise ConfigError(f"not an SQS URL: {url!r} (expected sqs://<queue-prefix>?region=…)")
    prefix = parts.netloc
    if parts.path.strip("/"):
        raise ConfigError(f"SQS URL {url!r}: expected sqs://<queue-prefix>, with no path")
    if not prefix or not _SQS_NAME.match(prefix) or len(prefix) > SQS_MAX_NAME // 2:
        raise ConfigError(
            f"SQS URL {url!r}: the queue prefix must be 1 to {SQS_MAX_NAME // 2} letters, "
            "digits, '-' or '_' (queues are named <prefix>-<api>)"
        )
    values = _query(url, SQS_PARAMETERS)
    settings = SqsSettings(prefix=prefix, endpoint=_endpoint(url, values))
    changes: dict[str, Any] = {}
    if "create" in values:
        changes["create"] = _flag(url, "create", values["create"])
    if "retention" in values:
        try:
            retention = parse_retention(values["retention"])
        except ConfigError as exc:
            raise ConfigError(f"SQS URL {url!r}: retention: {exc}") from exc
        if retention <= 0:
            raise ConfigError(f"SQS URL {url!r}: retention must be positive")
        changes["retention"] = retention
    if "max_receive_count" in values:
        raw = values["max_receive_count"]
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise ConfigError(f"SQS URL {url!r}: max_receive_count must be 1 to 1000, not {raw!r}")
        changes["max_receive_count"] = int(raw)
    return dataclasses.replace(settings, **changes)


def parse_s3_url(url: str) -> S3Settings:
    """Parse ``s3://<bucket>/<prefix>?…``; raise ConfigError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ConfigError(f"not an S3 URL: {url!r} (expected s3://<bucket>/<prefix>)")
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"S3 URL {url!r}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, "
            "digits, '.' or '-')"
        )
    prefix = parts.path.strip("/") or "chute"
    if not _KEY_PREFIX.match(prefix) or "//" in prefix:
        raise ConfigError(f"S3 URL {url!r}: {prefix!r} is not a usable key prefix")
    values = _query(url, S3_PARAMETERS)
    max_payload: int | None = None
    if "max_payload_size" in values:
        raw = values["max_payload_size"]
        if not raw.isdigit():
            raise ConfigError(f"S3 URL {url!r}: max_payload_size must be a number of bytes")
        max_payload = int(raw)
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=_endpoint(url, values),
        max_payload_size=max_payload,
    )
