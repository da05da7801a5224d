"""The SQS queue and the S3 store pass chute's backend contract suite against a real endpoint
(moto's server, or LocalStack)."""

from __future__ import annotations

import pytest

from chute.testing import QueueContract, StoreContract, free_port


def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


class TestSqsQueue(QueueContract):
    #: Visibility timeouts and long-poll waits are whole seconds on SQS.
    lease_seconds = 1.0
    short_wait = 1.0
    #: SQS's counters are approximate (on AWS they lag by up to a minute; moto is exact).
    depth_settle_seconds = 2.0

    @pytest.fixture
    def backend_url(self, sqs_url: str) -> str:
        return sqs_url

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"sqs://nowhere?endpoint_url={closed_endpoint()}&region=us-east-1&max_attempts=1"


class TestS3Store(StoreContract):
    @pytest.fixture
    def backend_url(self, s3_url: str) -> str:
        return s3_url

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"s3://nowhere/x?endpoint_url={closed_endpoint()}&region=us-east-1&max_attempts=1"
