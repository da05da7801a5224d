"""GCS and Pub/Sub answers refusing our credentials (401, 403) are chute's CredentialsRefused.

Neither emulator checks credentials (fake-gcs-server and the Pub/Sub emulator accept any
request), so these tests call the translation of an error answer directly, with the JSON error
body Google's APIs send; the rest of the path (retries, then this translation) is the one every
other error answer takes in test_gcs.py and test_pubsub.py.
"""

from __future__ import annotations

import json

import pytest

from chute.errors import BackendError, BackendUnavailable, CredentialsRefused
from chute_gcs.client import status_error
from chute_gcs.pubsub_client import status_error as pubsub_status_error
from chute_gcs.pubsub_settings import parse_pubsub_url
from chute_gcs.settings import parse_url


def google_error(code: int, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@pytest.mark.parametrize("status", [401, 403])
def test_gcs_refusing_our_credentials_is_credentials_refused(status: int) -> None:
    settings = parse_url("gs://chute-creds?endpoint_url=http://127.0.0.1:1")
    error = status_error(status, google_error(status, "Permission denied"), settings, "reading")
    assert isinstance(error, CredentialsRefused)
    assert not isinstance(error, BackendUnavailable)
    assert str(error).endswith(f"refused our credentials (reading): {status} Permission denied")


@pytest.mark.parametrize("status", [401, 403])
def test_pubsub_refusing_our_credentials_is_credentials_refused(status: int) -> None:
    settings = parse_pubsub_url("pubsub://chute-creds?endpoint_url=http://127.0.0.1:1")
    error = pubsub_status_error(status, google_error(status, "denied"), settings, "pulling")
    assert isinstance(error, CredentialsRefused)
    assert "refused our credentials (pulling)" in str(error)


def test_other_refusals_stay_backend_errors() -> None:
    settings = parse_url("gs://chute-creds?endpoint_url=http://127.0.0.1:1")
    error = status_error(400, google_error(400, "Invalid argument"), settings, "writing")
    assert type(error) is BackendError
