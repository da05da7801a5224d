"""Credentials AWS refuses are chute's CredentialsRefused (not an outage, not a generic error).

A private moto server with ``INITIAL_NO_AUTH_ACTION_COUNT=0`` checks every request's access key
against its IAM, as AWS does: the tests' made-up key is unknown there, so SQS answers
``InvalidClientTokenId`` and S3 ``InvalidAccessKeyId`` (both 403).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chute.errors import BackendUnavailable, CredentialsRefused
from chute.protocol import new_request_id
from chute.registry import open_queue, open_store
from chute.testing.services import MOTO, LocalServer, local_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def strict_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A moto server of this test's own that authenticates every request (the server process
    inherits the environment)."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with local_server(MOTO, tmp_path / "moto") as server:
        yield server


async def test_sqs_refusing_the_access_key_is_credentials_refused(
    strict_moto: LocalServer,
) -> None:
    url = f"sqs://chute-creds?endpoint_url={strict_moto.url}&region=us-east-1"
    async with open_queue(url) as queue:
        with pytest.raises(CredentialsRefused, match="refused our credentials") as err:
            await queue.send("demo", new_request_id())
    assert not isinstance(err.value, BackendUnavailable)
    assert "InvalidClientTokenId" in str(err.value)


async def test_s3_refusing_the_access_key_is_credentials_refused(strict_moto: LocalServer) -> None:
    url = f"s3://chute-creds?endpoint_url={strict_moto.url}&region=us-east-1"
    async with open_store(url) as store:
        with pytest.raises(CredentialsRefused, match="refused our credentials") as err:
            await store.read("demo", new_request_id())
    assert not isinstance(err.value, BackendUnavailable)
    assert "InvalidAccessKeyId" in str(err.value)
