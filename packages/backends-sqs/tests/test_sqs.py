"""SQS-specific behaviour of the queue: the queues chute creates, create=false, SQS's own
redrive, stale receipts from elsewhere, release with a delay, and the KEDA trigger."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from chute.config import loads_apis
from chute.errors import ConfigError, LeaseLost
from chute.hookspecs import PROJECT_NAME
from chute.protocol import new_request_id
from chute.registry import PluginManager, open_queue
from chute_k8s.hooks import K8sHooks
from chute_sqs import plugin
from chute_sqs.queue import SqsQueue

pytestmark = pytest.mark.anyio


@pytest.fixture
def api() -> str:
    return f"t{new_request_id()[:12].lower()}"


async def receive_one(queue: Any, api: str, lease: float = 30.0) -> Any:
    with anyio.fail_after(30):
        while True:
            got = await queue.receive(api, wait=1.0, lease=lease)
            if got:
                return got[0]


async def test_queue_and_dead_letter_queue_are_created_with_retention_and_redrive(
    sqs_url: str, sqs_client: Any, queue_prefix: str, api: str
) -> None:
    async with open_queue(sqs_url + "&retention=10d&max_receive_count=7") as queue:
        await queue.send(api, new_request_id())
    name = f"{queue_prefix}-{api}"
    url = sqs_client.get_queue_url(QueueName=name)["QueueUrl"]
    dlq = sqs_client.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs_client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    assert attributes["MessageRetentionPeriod"] == str(10 * 86400)
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == 7
    dlq_attributes = sqs_client.get_queue_attributes(
        QueueUrl=dlq, AttributeNames=["MessageRetentionPeriod"]
    )["Attributes"]
    assert dlq_attributes["MessageRetentionPeriod"] == str(14 * 86400)


async def test_retention_beyond_14_days_is_capped_and_default_is_7_days(
    sqs_url: str, sqs_client: Any, queue_prefix: str, api: str
) -> None:
    async with open_queue(sqs_url + "&retention=30d") as queue:
        await queue.depth(api)
    async with open_queue(sqs_url) as queue:
        await queue.depth(f"{api}-b")
    for name, expected in ((api, 14 * 86400), (f"{api}-b", 7 * 86400)):
        url = sqs_client.get_queue_url(QueueName=f"{queue_prefix}-{name}")["QueueUrl"]
        attributes = sqs_client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["MessageRetentionPeriod"]
        )["Attributes"]
        assert attributes["MessageRetentionPeriod"] == str(expected)


async def test_an_existing_queue_with_short_retention_is_fixed(
    sqs_url: str, sqs_client: Any, queue_prefix: str, api: str
) -> None:
    # Created by someone else with SQS's 4-day default (what lost Cortex requests).
    url = sqs_client.create_queue(QueueName=f"{queue_prefix}-{api}")["QueueUrl"]
    async with open_queue(sqs_url) as queue:
        await queue.send(api, new_request_id())
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == str(7 * 86400)
    assert "RedrivePolicy" in attributes


async def test_create_false_requires_the_queues(
    sqs_url: str, sqs_client: Any, queue_prefix: str, api: str
) -> None:
    async with open_queue(sqs_url + "&create=false") as queue:
        with pytest.raises(ConfigError, match=r"does not exist.*create=false"):
            await queue.send(api, new_request_id())
    async with open_queue(sqs_url) as queue:  # create=true (default) makes them
        await queue.send(api, new_request_id())
    async with open_queue(sqs_url + "&create=false") as queue:
        delivery = await receive_one(queue, api)
        await queue.ack(delivery)


async def test_sqs_redrive_moves_a_message_delivered_too_often(sqs_url: str, api: str) -> None:
    """The redrive policy is a safety net for messages that kill their consumer every time."""
    request_id = new_request_id()
    async with open_queue(sqs_url + "&max_receive_count=2") as queue:
        await queue.send(api, request_id)
        await receive_one(queue, api, lease=1)
        await receive_one(queue, api, lease=1)
        # The third receive finds the message gone: SQS moved it to the dead-letter queue.
        with anyio.fail_after(30):
            while not (dead := await queue.list_dead(api)):
                assert await queue.receive(api, wait=1.0, lease=1) == []
        assert [d.request_id for d in dead] == [request_id]
        assert "redrive" in dead[0].reason
        assert await queue.requeue_dead(api) == 1
        again = await receive_one(queue, api)
        assert again.request_id == request_id
        assert again.attempt >= 2


async def test_a_stale_receipt_from_another_process_is_judged_by_sqs(
    sqs_url: str, api: str
) -> None:
    """A queue object that did not receive the message has no lease to check: what SQS
    answers decides. After an ack, ChangeMessageVisibility with the old handle is refused
    (ReceiptHandleIsInvalid), which is LeaseLost. (DeleteMessage with a spent handle is
    accepted by SQS and moto alike: that is why leases are tracked in-process.)"""
    async with open_queue(sqs_url) as one, open_queue(sqs_url) as other:
        await one.send(api, new_request_id())
        delivery = await receive_one(one, api)
        await one.ack(delivery)
        with pytest.raises(LeaseLost, match=r"ReceiptHandleIsInvalid|InvalidParameterValue"):
            await other.extend(delivery, 30)
        with pytest.raises(LeaseLost, match="settled"):
            await one.extend(delivery, 30)


async def test_release_with_delay_hides_the_message(sqs_url: str, api: str) -> None:
    """SQS's side of a release with a delay, beyond the contract (SqsQueue declares
    depth_counts_delayed_as_queued = False): the hidden message counts as in flight, and the
    first delivery's receipt is dead once the next attempt is out."""
    request_id = new_request_id()
    async with open_queue(sqs_url) as queue:
        assert not queue.depth_counts_delayed_as_queued
        await queue.send(api, request_id)
        first = await receive_one(queue, api)
        await queue.release(first, delay=2)
        start = time.monotonic()
        depth = await queue.depth(api)
        assert (depth.queued, depth.in_flight) == (0, 1)
        assert await queue.receive(api, wait=0.0) == []
        second = await receive_one(queue, api)
        assert time.monotonic() - start >= 1.0
        assert (second.request_id, second.attempt) == (request_id, first.attempt + 1)
        with pytest.raises(LeaseLost):
            await queue.ack(first)
        await queue.ack(second)


async def test_a_receive_waits_in_whole_seconds_without_spinning(sqs_url: str, api: str) -> None:
    async with open_queue(sqs_url) as queue:
        assert isinstance(queue, SqsQueue)
        start = time.monotonic()
        assert await queue.receive(api, wait=0.2) == []  # rounded up to one long poll of 1 s
        assert time.monotonic() - start >= 0.8


API_YAML = """
- name: hello
  kind: AsyncAPI
  pod:
    max_concurrency: 4
    containers:
      - name: api
        image: quay.io/example/hello:1
  autoscaling:
    target_in_flight: 3
"""


def test_keda_trigger_for_sqs_queues() -> None:
    [api] = loads_apis(API_YAML)
    hooks = K8sHooks(PluginManager())  # every installed plugin, as `chute render` sees them
    url = "sqs://prod?region=eu-west-1"
    trigger = hooks.keda_trigger(queue_url=url, queue_name="hello", api=api, cluster={})
    assert trigger == {
        "type": "aws-sqs-queue",
        "metadata": {
            "queueURL": "prod-hello",
            "queueLength": "3",
            "awsRegion": "eu-west-1",
            "scaleOnInFlight": "true",
        },
        "authenticationRef": {"name": "chute-aws"},
    }
    local = plugin.chute_keda_trigger(
        queue_url="sqs://dev?endpoint_url=http://127.0.0.1:5000", queue_name="hello", api=api
    )
    assert local is not None
    metadata: Any = local["metadata"]
    assert metadata["awsEndpoint"] == "http://127.0.0.1:5000"
    assert metadata["awsRegion"] == "us-east-1"  # from the test environment's AWS_REGION
    assert plugin.chute_keda_trigger(queue_url="redis://x", queue_name="hello", api=api) is None
    assert PROJECT_NAME == "chute"
