"""The GCS store passes chute's store contract suite against a real emulator."""

from __future__ import annotations

import pytest

from chute.testing import StoreContract, free_port


class TestGcsStore(StoreContract):
    @pytest.fixture
    def backend_url(self, gcs_url: str) -> str:
        return gcs_url

    @pytest.fixture
    def unreachable_url(self) -> str:
        # One retry, so the test does not wait out the whole backoff.
        return f"gs://chute-nowhere/x?endpoint_url=http://127.0.0.1:{free_port()}&retries=1"


class TestGcsStoreSmallChunks(StoreContract):
    """The same contract with 256 KiB chunks (the 10 MiB payload goes up in 41 of them) and a
    payload limit of the store's own."""

    @pytest.fixture
    def backend_url(self, gcs_url: str) -> str:
        return f"{gcs_url}&chunk_size={256 * 1024}&max_payload_size={11 * 1024 * 1024}"

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"gs://chute-nowhere/x?endpoint_url=http://127.0.0.1:{free_port()}&retries=0"
