"""Fixtures for the SQS + S3 backend's tests: a real SQS/S3 endpoint found through
``chute.testing.services`` (``$CHUTE_TEST_MOTO_URL``, else moto on 127.0.0.1:5000, else a
``moto_server`` we start on a free port, else LocalStack through testcontainers).

Each session uses its own queue prefix and bucket, and deletes them at the end.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chute.testing.services import FoundService

#: moto accepts any credentials, but clients need some, and a region; never the real ones.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
REGION = "us-east-1"

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def aws_test_env() -> Iterator[None]:
    """Test credentials for every client the tests (and their subprocesses) create."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_TEST_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="session")
def endpoint(moto_service: FoundService, aws_test_env: None) -> str:
    return moto_service.url


@pytest.fixture(scope="session")
def s3_client(endpoint: str) -> Any:
    """A plain synchronous S3 client on the endpoint, to look at what the store wrote."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture(scope="session")
def sqs_client(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture(scope="session")
def session_tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def bucket(s3_client: Any, session_tag: str) -> Iterator[str]:
    """A bucket of this session's own, emptied and deleted at the end."""
    name = f"chute-test-{session_tag}"
    s3_client.create_bucket(Bucket=name)
    yield name
    _empty_bucket(s3_client, name)


def _empty_bucket(client: Any, name: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys})
    client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def queue_prefix(sqs_client: Any, session_tag: str) -> Iterator[str]:
    """An SQS queue prefix of this session's own; its queues are deleted at the end."""
    prefix = f"chute-test-{session_tag}"
    yield prefix
    urls = sqs_client.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    for url in urls:
        sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def sqs_url(endpoint: str, queue_prefix: str) -> str:
    return f"sqs://{queue_prefix}?endpoint_url={endpoint}&region={REGION}"


@pytest.fixture
def s3_url(endpoint: str, bucket: str) -> str:
    """A store URL with a key prefix of this test's own."""
    return f"s3://{bucket}/t{next(_counter)}?endpoint_url={endpoint}&region={REGION}"
