"""The fixtures of chute's pytest plugin (:mod:`chute.testing.plugin` registers this module).

Use them by name in any test of a project where chute is installed; override one by defining
a fixture of the same name in a conftest.py.
"""

from __future__ import annotations

import pytest

from chute.testing.services import GCS, MOTO, PUBSUB, REDIS, service_fixture


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """``"asyncio"`` for every ``@pytest.mark.anyio`` test, session-scoped so that async
    fixtures of any scope work."""
    return "asyncio"


#: A Redis server: ``$CHUTE_TEST_REDIS_URL``, else 127.0.0.1:6379, else a ``redis-server``
#: started for the session, else Docker.
redis_service = service_fixture(REDIS)
#: An SQS + S3 endpoint: ``$CHUTE_TEST_MOTO_URL``, else 127.0.0.1:5000, else ``moto_server``,
#: else LocalStack in Docker.
moto_service = service_fixture(MOTO)
#: A GCS emulator: ``$CHUTE_TEST_GCS_URL``, else 127.0.0.1:4443, else fake-gcs-server.
gcs_service = service_fixture(GCS)
#: A Pub/Sub emulator: ``$CHUTE_TEST_PUBSUB_URL``, else 127.0.0.1:8085, else Google's emulator.
pubsub_service = service_fixture(PUBSUB)
