"""chute's pytest plugin: the fixtures chute's own suites and a plugin author's suite share.

pytest loads it wherever chute is installed (entry point ``chute`` in group ``pytest11``); turn
it off with ``-p no:chute``. It provides:

* ``anyio_backend``: ``"asyncio"``, session-scoped, so that async fixtures of any scope work
  under ``@pytest.mark.anyio`` (a conftest.py may override it, e.g. to add ``"trio"``);
* ``redis_service``, ``moto_service``, ``gcs_service``, ``pubsub_service``: a real service
  for the session (:class:`~chute.testing.services.FoundService`, found or started as
  :mod:`chute.testing.services` describes), skipped when none is there, or failed with
  ``--require-services`` / ``CHUTE_REQUIRE_SERVICES=1``;
* the option ``--require-services``.

Nothing here imports an optional package: each service fixture only looks for its server
when a test asks for it.
"""

from __future__ import annotations

import os

import pytest

from chute.testing import REWRITTEN, fixtures
from chute.testing.services import REQUIRE_ENV, services_required

pytest.register_assert_rewrite(*REWRITTEN)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chute")
    group.addoption(
        "--require-services",
        action="store_true",
        default=False,
        help=f"fail, instead of skip, a test whose service (Redis, S3/SQS, GCS, Pub/Sub) is "
        f"missing (also: {REQUIRE_ENV}=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("require_services", default=False):
        os.environ[REQUIRE_ENV] = "1"
    # Registered now, after every installed plugin has loaded, so that these fixtures take
    # precedence over other plugins' of the same name (anyio's module-scoped
    # ``anyio_backend``); a conftest.py still overrides them.
    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, "chute.testing.fixtures")


def pytest_report_header(config: pytest.Config) -> str | None:
    if services_required():
        return "chute: services required (a missing one fails the test)"
    return None


__all__ = ["pytest_addoption", "pytest_configure", "pytest_report_header"]
