"""The dequeuer's settings: command-line flags resolved against the API file.

Like Cortex's dequeuer, the flags name the API and the ports; the readiness probes, the user
port and the number of workers come from the API file unless a flag overrides them.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from chute.config import API, find_api, load_apis
from chute.errors import ConfigError
from chute.registry import resolve_url

#: Cortex's admin port (``/healthz`` and ``/metrics``).
DEFAULT_ADMIN_PORT = 15000
DEFAULT_GRACE_PERIOD = 30.0
DEFAULT_LEASE = 30.0
#: The largest response body kept as a result: as large as the gateway's default payload limit.
DEFAULT_MAX_RESULT_SIZE = 100 * 1024 * 1024
#: How long a failed webhook delivery is retried.
DEFAULT_WEBHOOK_RETRY_FOR = 300.0


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one dequeuer process needs, resolved and validated."""

    api: API
    queue_url: str
    store_url: str
    user_port: int
    workers: int
    admin_port: int = DEFAULT_ADMIN_PORT
    grace_period: float = DEFAULT_GRACE_PERIOD
    lease: float = DEFAULT_LEASE
    max_result_size: int = DEFAULT_MAX_RESULT_SIZE
    #: How long to wait for the container to accept a connection before failing the request.
    connect_timeout: float = 5.0
    webhook_retry_for: float = DEFAULT_WEBHOOK_RETRY_FOR

    @property
    def api_name(self) -> str:
        return self.api.name


def resolve(
    *,
    api_file: str | Path,
    api_name: str,
    queue_url: str | None = None,
    store_url: str | None = None,
    user_port: int | None = None,
    workers: int | None = None,
    admin_port: int = DEFAULT_ADMIN_PORT,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    lease: float = DEFAULT_LEASE,
    max_result_size: int = DEFAULT_MAX_RESULT_SIZE,
    webhook_retry_for: float = DEFAULT_WEBHOOK_RETRY_FOR,
) -> Settings:
    """Build :class:`Settings` from flags, the environment and the API file.

    Backend URLs come from the flag, else ``CHUTE_QUEUE_URL`` / ``CHUTE_STORE_URL``, else the
    embedded default. Raises ConfigError naming the bad value.
    """
    api = find_api(load_apis(api_file), api_name)
    settings = Settings(
        api=api,
        queue_url=resolve_url("queue", queue_url),
        store_url=resolve_url("store", store_url),
        user_port=api.pod.port if user_port is None else user_port,
        workers=api.pod.max_concurrency if workers is None else workers,
        admin_port=admin_port,
        grace_period=grace_period,
        lease=lease,
        max_result_size=max_result_size,
        webhook_retry_for=webhook_retry_for,
    )
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if not 1 <= s.user_port <= 65535:
        raise ConfigError(f"user port must be 1..65535, got {s.user_port}")
    if not 0 <= s.admin_port <= 65535:
        raise ConfigError(f"admin port must be 0..65535 (0 picks a free one), got {s.admin_port}")
    if s.admin_port == s.user_port:
        raise ConfigError(f"admin port and user port are both {s.user_port}")
    if s.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {s.workers}")
    if s.lease <= 0:
        raise ConfigError(f"lease must be positive, got {s.lease}")
    if s.grace_period < 0:
        raise ConfigError(f"grace period must not be negative, got {s.grace_period}")
    if s.webhook_retry_for < 0:
        raise ConfigError(f"webhook retry time must not be negative, got {s.webhook_retry_for}")
    if s.max_result_size < 1:
        raise ConfigError(f"max result size must be positive, got {s.max_result_size}")
