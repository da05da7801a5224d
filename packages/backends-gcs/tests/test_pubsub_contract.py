"""The Pub/Sub queue passes chute's queue contract suite against Google's Pub/Sub emulator."""

from __future__ import annotations

import pytest

from chute.testing import QueueContract, free_port


class TestPubSubQueue(QueueContract):
    #: Ack deadlines are whole seconds.
    lease_seconds = 1.0
    short_wait = 1.0

    @pytest.fixture
    def backend_url(self, pubsub_url: str) -> str:
        return pubsub_url

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"pubsub://chute-test/x?endpoint_url=http://127.0.0.1:{free_port()}&retries=1"
