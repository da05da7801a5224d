"""What a ``pubsub://`` URL says: the project, chute's name prefix, and options.

``pubsub://<project>[/<prefix>][?endpoint_url=…&create=…&retention=…&ack_deadline=…&
max_delivery_attempts=…&timeout=…&retries=…]``. The endpoint is ``endpoint_url`` if given, else
``$PUBSUB_EMULATOR_HOST`` (the variable Google's own clients honour: ``host:port``), else the real
service; an emulator endpoint gets no credentials.

Each API gets a topic and a pull subscription named ``<prefix>-<api>``, and a dead-letter topic
and subscription named ``<prefix>-<api>-dead`` (see docs/gcs.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from chute.backends.base import DEFAULT_RETENTION
from chute.backends.urls import (
    Option,
    boolean,
    duration,
    http_url,
    int_between,
    non_negative_int,
    parse_options,
    positive_seconds,
)
from chute.errors import ConfigError
from chute.protocol import validate_api_name

GOOGLE_ENDPOINT: Final = "https://pubsub.googleapis.com"
EMULATOR_ENV: Final = "PUBSUB_EMULATOR_HOST"
DEFAULT_PREFIX: Final = "chute"
DEAD_SUFFIX: Final = "-dead"
#: Pub/Sub keeps an unacked message at most 7 days in a subscription.
MAX_RETENTION: Final = 7 * 24 * 3600
#: Ack deadlines are 10 to 600 s on a subscription; modifyAckDeadline takes 0 to 600 s.
MIN_ACK_DEADLINE: Final = 10
MAX_ACK_DEADLINE: Final = 600
#: The dequeuer's default lease: receives with this lease need no modifyAckDeadline.
DEFAULT_ACK_DEADLINE: Final = 30

# Project ids: lowercase letters, digits and hyphens (plus "domain:" scoped legacy ids).
_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{1,61}[a-z0-9]$")
# Resource names: start with a letter, then letters, digits, - _ . ~ + %; never "goog…".
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9._~+-]{0,99}$")

QUERY_PARAMETERS: Final[dict[str, Option[Any]]] = {
    "endpoint_url": Option(
        "Pub/Sub REST endpoint, e.g. an emulator (default http://$PUBSUB_EMULATOR_HOST, else "
        "https://pubsub.googleapis.com)",
        http_url(),
    ),
    "create": Option(
        "create missing topics and subscriptions (true, default) or require them (false)",
        boolean(),
    ),
    "retention": Option(
        "how long results are kept (7d by default); subscriptions keep messages as long, up "
        "to Pub/Sub's 7 days",
        duration(),
    ),
    "ack_deadline": Option(
        "the subscription's ack deadline in seconds, 10 to 600 (default 30, the dequeuer's "
        "lease: a receive with another lease costs one modifyAckDeadline more)",
        int_between(MIN_ACK_DEADLINE, MAX_ACK_DEADLINE),
    ),
    "max_delivery_attempts": Option(
        "deliveries after which Pub/Sub itself moves a message to the dead-letter topic, 5 to "
        "100 (default 100; the dequeuer's own retry limit acts well before)",
        int_between(5, 100),
    ),
    "timeout": Option(
        "seconds one HTTP request may take before it counts as unavailable (default 30)",
        positive_seconds(),
    ),
    "retries": Option(
        "retries of a request that failed with 429, 5xx or a network error (default 5)",
        non_negative_int(),
    ),
}


@dataclass(frozen=True)
class PubSubSettings:
    """Everything a ``pubsub://`` URL says, with the endpoint resolved."""

    project: str
    prefix: str = DEFAULT_PREFIX
    endpoint: str = GOOGLE_ENDPOINT
    #: True for an emulator (``endpoint_url`` or ``$PUBSUB_EMULATOR_HOST``): no credentials.
    emulator: bool = False
    create: bool = True
    retention: float = DEFAULT_RETENTION
    ack_deadline: int = DEFAULT_ACK_DEADLINE
    max_delivery_attempts: int = 100
    timeout: float = 30.0
    retries: int = 5

    @property
    def address(self) -> str:
        """Where the queues are, for messages."""
        where = "" if self.endpoint == GOOGLE_ENDPOINT else f" at {self.endpoint}"
        return f"pubsub://{self.project}/{self.prefix}{where}"

    @property
    def session_key(self) -> tuple[object, ...]:
        """What decides which HTTP session and credentials a URL uses."""
        return ("pubsub", self.endpoint, self.emulator)

    @property
    def message_retention(self) -> int:
        """Seconds a subscription keeps a message: the result retention, within Pub/Sub's
        limits (10 minutes to 7 days)."""
        return max(600, min(MAX_RETENTION, int(self.retention)))

    def name(self, api: str) -> str:
        """The topic's and the subscription's name for ``api``."""
        return f"{self.prefix}-{validate_api_name(api)}"

    def dead_name(self, api: str) -> str:
        """The dead-letter topic's and subscription's name for ``api``."""
        return f"{self.name(api)}{DEAD_SUFFIX}"

    def topic(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"


def parse_pubsub_url(url: str) -> PubSubSettings:
    """Parse ``pubsub://project[/prefix][?…]``; raise ConfigError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "pubsub":
        raise ConfigError(f"not a Pub/Sub URL: {url!r} (expected pubsub://project/prefix)")
    project = parts.netloc
    if not _PROJECT.match(project):
        raise ConfigError(
            f"Pub/Sub URL {url!r}: {project!r} is not a Google Cloud project id (lowercase "
            "letters, digits and hyphens, starting with a letter)"
        )
    values: dict[str, Any] = {"project": project}
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if segments:
        prefix = segments[0]
        if len(segments) > 1 or not _PREFIX.match(prefix) or prefix.lower().startswith("goog"):
            raise ConfigError(
                f"Pub/Sub URL {url!r}: the prefix {'/'.join(segments)!r} is not allowed (one "
                "segment of up to 100 letters, digits, '-', '_', '.', '~' or '+', starting with "
                "a letter, not with 'goog')"
            )
        values["prefix"] = prefix
    values.update(parse_options(url, QUERY_PARAMETERS, label="Pub/Sub URL"))
    endpoint = values.pop("endpoint_url", None)
    if endpoint is None:
        env = os.environ.get(EMULATOR_ENV, "").strip()
        if env:
            raw = env if "://" in env else f"http://{env}"
            try:
                endpoint = http_url()(raw)
            except ValueError as exc:
                raise ConfigError(f"Pub/Sub URL {url!r}: ${EMULATOR_ENV} {env!r}: {exc}") from exc
    if endpoint is not None:
        values["endpoint"] = endpoint
        values["emulator"] = True
    return PubSubSettings(**values)
