"""What ``sqs://`` and ``s3://`` URLs say, checked before anything talks to AWS.

``sqs://<queue-prefix>?region=…&endpoint_url=…&max_attempts=…&create=true|false&retention=7d&max_receive_count=…``
``s3://<bucket>/<prefix>?region=…&endpoint_url=…&max_attempts=…&max_payload_size=…``

Credentials never appear in a URL: they come from the standard AWS chain (environment,
shared profile, container or instance metadata), exactly as the AWS CLI finds them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from chute.backends.base import DEFAULT_RETENTION
from chute.backends.urls import (
    Option,
    boolean,
    bucket_url,
    duration,
    http_url,
    int_between,
    matching,
    parse_options,
    size,
)
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

_REGION = Option(
    "AWS region (default: the AWS chain's region, us-east-1 with an endpoint_url)",
    matching(r"[a-z0-9-]{2,32}", "an AWS region name such as eu-west-1"),
)
_ENDPOINT_URL = Option(
    "a non-AWS endpoint such as moto or LocalStack (http://127.0.0.1:5000)", http_url()
)
#: The SDK's attempts per call (botocore's ``standard`` retry mode) before an error is final.
DEFAULT_MAX_ATTEMPTS: Final = 3
_MAX_ATTEMPTS = Option(
    f"attempts per AWS call, the first included, before a connection error, throttling or 5xx "
    f"is final (default {DEFAULT_MAX_ATTEMPTS}, with the SDK's jittered backoff in between)",
    int_between(1, 20),
)
SQS_PARAMETERS: Final[dict[str, Option[Any]]] = {
    "region": _REGION,
    "endpoint_url": _ENDPOINT_URL,
    "max_attempts": _MAX_ATTEMPTS,
    "create": Option(
        "create missing queues and their dead-letter queues (true, default) or require them "
        "(false)",
        boolean(),
    ),
    "retention": Option(
        "how long results are kept (7d by default); queues keep messages as long, up to "
        "SQS's 14 days",
        duration(),
    ),
    "max_receive_count": Option(
        "deliveries after which SQS itself moves a message to the dead-letter queue (default "
        "100; the dequeuer's own retry limit acts well before)",
        int_between(1, 1000),
    ),
}
S3_PARAMETERS: Final[dict[str, Option[Any]]] = {
    "region": _REGION,
    "endpoint_url": _ENDPOINT_URL,
    "max_attempts": _MAX_ATTEMPTS,
    "max_payload_size": Option(
        "largest payload the store accepts, in bytes or as 16Mi (default: no limit of its own "
        "beyond S3's)",
        size(),
    ),
}


@dataclass(frozen=True)
class AwsEndpoint:
    """Where a client connects: the region and, for moto/LocalStack, an explicit endpoint;
    and how often it tries a call."""

    region: str | None = None
    endpoint_url: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

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


def _endpoint(values: dict[str, Any]) -> AwsEndpoint:
    return AwsEndpoint(
        region=values.get("region"),
        endpoint_url=values.get("endpoint_url"),
        max_attempts=values.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
    )


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
    values = parse_options(url, SQS_PARAMETERS, label="SQS URL")
    return SqsSettings(
        prefix=prefix,
        endpoint=_endpoint(values),
        create=values.get("create", True),
        retention=values.get("retention", DEFAULT_RETENTION),
        max_receive_count=values.get("max_receive_count", 100),
    )


def parse_s3_url(url: str) -> S3Settings:
    """Parse ``s3://<bucket>/<prefix>?…``; raise ConfigError naming what is wrong."""
    bucket, path = bucket_url(
        url,
        scheme="s3",
        label="an S3 URL",
        example="s3://<bucket>/<prefix>",
        bucket_name=_BUCKET,
        bucket_rule="3 to 63 lowercase letters, digits, '.' or '-'",
    )
    prefix = path.strip("/") or "chute"
    if not _KEY_PREFIX.match(prefix) or "//" in prefix:
        raise ConfigError(f"S3 URL {url!r}: {prefix!r} is not a usable key prefix")
    values = parse_options(url, S3_PARAMETERS, label="S3 URL")
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=_endpoint(values),
        max_payload_size=values.get("max_payload_size"),
    )
