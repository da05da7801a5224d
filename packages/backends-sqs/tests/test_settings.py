"""URL parsing for sqs:// and s3://, and unreachable endpoints as BackendUnavailable."""

from __future__ import annotations

import pytest

from chute.errors import BackendUnavailable, ConfigError, UnknownSchemeError
from chute.registry import open_queue, open_store
from chute.testing import body_of, free_port, new_record
from chute_sqs.settings import parse_s3_url, parse_sqs_url

pytestmark = pytest.mark.anyio


def test_sqs_url() -> None:
    settings = parse_sqs_url(
        "sqs://prod_1?region=eu-west-1&endpoint_url=http://127.0.0.1:4566&create=false"
        "&retention=3d&max_receive_count=5&max_attempts=7"
    )
    assert settings.prefix == "prod_1"
    assert settings.endpoint.region == "eu-west-1"
    assert settings.endpoint.endpoint_url == "http://127.0.0.1:4566"
    assert settings.create is False
    assert settings.retention == 3 * 86400
    assert settings.message_retention == 3 * 86400
    assert settings.max_receive_count == 5
    assert settings.endpoint.max_attempts == 7
    assert settings.queue_name("hello") == "prod_1-hello"
    assert settings.dlq_name("hello") == "prod_1-hello-dlq"
    defaults = parse_sqs_url("sqs://q")
    assert (defaults.create, defaults.retention, defaults.endpoint.region) == (True, 604800, None)
    assert defaults.endpoint.max_attempts == 3


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqs://", "queue prefix"),
        ("sqs://a.b", "queue prefix"),
        ("sqs://" + "p" * 41, "queue prefix"),
        ("sqs://q/path", "no path"),
        ("sqs://q?colour=blue", "unknown parameter 'colour'"),
        ("sqs://q?create=maybe", "true or false"),
        ("sqs://q?retention=soon", "retention"),
        ("sqs://q?max_receive_count=0", "max_receive_count"),
        ("sqs://q?max_attempts=0", "max_attempts"),
        ("sqs://q?max_attempts=many", "max_attempts"),
        ("sqs://q?endpoint_url=localhost:4566", "endpoint_url"),
        ("sqs://q?region=EU%20West", "region"),
        ("redis://q", "not an SQS URL"),
    ],
)
def test_bad_sqs_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_sqs_url(url)


def test_queue_names_follow_sqs_rules() -> None:
    settings = parse_sqs_url("sqs://" + "p" * 40)
    assert settings.queue_name("a" * 35) == "p" * 40 + "-" + "a" * 35  # 76 + "-dlq" = 80
    with pytest.raises(ConfigError, match="at most 80"):
        settings.queue_name("a" * 36)
    with pytest.raises(ConfigError):
        settings.queue_name("has.dot")


def test_s3_url() -> None:
    settings = parse_s3_url(
        "s3://my-bucket/a/b/?region=us-west-2&max_payload_size=1024&max_attempts=1"
    )
    assert (settings.bucket, settings.prefix) == ("my-bucket", "a/b")
    assert settings.endpoint.region == "us-west-2"
    assert settings.max_payload_size == 1024
    assert settings.endpoint.max_attempts == 1
    defaults = parse_s3_url("s3://my-bucket")
    assert (defaults.prefix, defaults.endpoint.max_attempts) == ("chute", 3)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://B/x", "bucket name"),
        ("s3://ab/x", "bucket name"),
        ("s3://bucket/x?max_payload_size=lots", "max_payload_size"),
        ("s3://bucket/x?max_attempts=21", "max_attempts"),
        ("s3://bucket/x?timeout=1", "unknown parameter"),
        ("s3://bucket/a//b", "key prefix"),
        ("gs://bucket/x", "not an S3 URL"),
    ],
)
def test_bad_s3_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_s3_url(url)


def test_schemes_are_registered_by_role() -> None:
    # sqs serves the queue and s3 the store, not the other way round.
    with pytest.raises(UnknownSchemeError):
        open_store("sqs://q")
    with pytest.raises(UnknownSchemeError):
        open_queue("s3://bucket/x")


async def test_unreachable_endpoints_are_backend_unavailable() -> None:
    """With the default retries (the contract suite's unreachable URLs try once)."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with open_queue(f"sqs://q?endpoint_url={endpoint}") as queue:
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await queue.depth("hello")
    async with open_store(f"s3://bucket/x?endpoint_url={endpoint}") as store:
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await store.create(new_record("hello"), body_of(b"{}"))
        with pytest.raises(BackendUnavailable):
            await store.initialize()
