"""Pub/Sub-specific behaviour of the queue, on Google's emulator: the resources chute creates,
create=false, an existing subscription without a dead-letter policy, Pub/Sub's own dead-letter
forwarding, long pulls kept across receives, URLs, and the KEDA trigger."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import anyio
import pytest

from chute.config import loads_apis
from chute.errors import ConfigError
from chute.protocol import new_request_id
from chute.registry import PluginManager, open_queue
from chute_gcs import plugin
from chute_gcs.pubsub_settings import GOOGLE_ENDPOINT, parse_pubsub_url
from chute_k8s.hooks import K8sHooks

pytestmark = pytest.mark.anyio


def rest(endpoint: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """A plain call to the emulator's REST API, to look at (or set up) what chute sees."""
    request = urllib.request.Request(
        f"{endpoint}/v1/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return {"status": exc.code}


async def receive_one(queue: Any, api: str, lease: float = 30.0) -> Any:
    with anyio.fail_after(30):
        while True:
            got = await queue.receive(api, wait=1.0, lease=lease)
            if got:
                return got[0]


async def test_topics_and_subscriptions_are_created_with_retention_and_dead_letter_policy(
    pubsub_url: str, pubsub_endpoint: str, prefix: str
) -> None:
    async with open_queue(pubsub_url + "&retention=2d&ack_deadline=45") as queue:
        assert await queue.receive("hello", wait=0.0) == []
    sub = rest(pubsub_endpoint, "GET", f"projects/chute-test/subscriptions/{prefix}-hello")
    assert sub["topic"] == f"projects/chute-test/topics/{prefix}-hello"
    assert sub["ackDeadlineSeconds"] == 45
    assert sub["messageRetentionDuration"] == f"{2 * 86400}s"
    assert sub["deadLetterPolicy"] == {
        "deadLetterTopic": f"projects/chute-test/topics/{prefix}-hello-dead",
        "maxDeliveryAttempts": 100,
    }
    assert sub["expirationPolicy"] == {}  # never expires, however long the API sits idle
    dead = rest(pubsub_endpoint, "GET", f"projects/chute-test/subscriptions/{prefix}-hello-dead")
    assert dead["topic"] == f"projects/chute-test/topics/{prefix}-hello-dead"
    assert dead["messageRetentionDuration"] == f"{7 * 86400}s"


async def test_create_false_requires_the_resources_and_their_dead_letter_policy(
    pubsub_url: str, pubsub_endpoint: str, prefix: str
) -> None:
    async with open_queue(pubsub_url + "&create=false") as queue:
        with pytest.raises(ConfigError, match="does not exist"):
            await queue.send("hello", new_request_id())
    # An operator's subscription without the dead-letter policy: refused with create=false,
    # given the policy (and chute's dead-letter topic) when chute may manage it.
    rest(pubsub_endpoint, "PUT", f"projects/chute-test/topics/{prefix}-hello", {})
    rest(
        pubsub_endpoint,
        "PUT",
        f"projects/chute-test/subscriptions/{prefix}-hello",
        {"topic": f"projects/chute-test/topics/{prefix}-hello"},
    )
    async with open_queue(pubsub_url + "&create=false") as queue:
        with pytest.raises(ConfigError, match="no dead-letter policy"):
            await queue.send("hello", new_request_id())
    async with open_queue(pubsub_url) as queue:
        request_id = new_request_id()
        await queue.send("hello", request_id)
        delivery = await receive_one(queue, "hello")
        assert (delivery.request_id, delivery.attempt) == (request_id, 1)
        await queue.dead_letter(delivery, "checked")
        assert [d.request_id for d in await queue.list_dead("hello")] == [request_id]
    sub = rest(pubsub_endpoint, "GET", f"projects/chute-test/subscriptions/{prefix}-hello")
    assert sub["deadLetterPolicy"]["deadLetterTopic"].endswith(f"/{prefix}-hello-dead")


async def test_pubsubs_own_dead_letter_forwarding_is_listed_with_its_attempts(
    pubsub_url: str,
) -> None:
    """A message Pub/Sub itself gave up on (``max_delivery_attempts`` releases) lands in the
    dead letter, listed with Pub/Sub's reason and its delivery count, and a requeue delivers
    it again with a higher attempt."""
    async with open_queue(pubsub_url + "&max_delivery_attempts=5") as queue:
        request_id = new_request_id()
        await queue.send("hello", request_id)
        for attempt in range(1, 6):
            delivery = await receive_one(queue, "hello")
            assert delivery.attempt == attempt
            await queue.release(delivery)
        with anyio.fail_after(30):
            # The emulator forwards when the subscription is pulled (Google Cloud on its own).
            while not (dead := await queue.list_dead("hello")):
                assert await queue.receive("hello", wait=0.5) == []
        [letter] = dead
        assert letter.request_id == request_id
        assert "maxDeliveryAttempts" in letter.reason
        assert letter.attempts == 5
        assert await queue.requeue_dead("hello") == 1
        again = await receive_one(queue, "hello")
        assert (again.request_id, again.attempt) == (request_id, 6)


async def test_a_receive_that_ran_out_of_time_leaves_its_pull_to_the_next(pubsub_url: str) -> None:
    """The emulator hands messages to pulls whose client gave up (they then wait out their ack
    deadline, and come back with a higher attempt): a receive keeps its pull open for the next
    one instead. If this fails, an idle dequeuer's next request starts a whole ack deadline
    late."""
    async with open_queue(pubsub_url + "&ack_deadline=60") as queue:
        for _ in range(3):
            assert await queue.receive("hello", wait=0.2) == []
        request_id = new_request_id()
        await queue.send("hello", request_id)
        start = time.monotonic()
        delivery = await receive_one(queue, "hello")
        assert (delivery.request_id, delivery.attempt) == (request_id, 1)
        assert time.monotonic() - start < 20.0
        await queue.ack(delivery)


async def test_a_receive_with_no_wait_takes_what_is_there_and_leaves_no_pull(
    pubsub_url: str,
) -> None:
    """``wait=0`` pulls what is there at once (and leaves no pull open to catch a later
    message: each one comes with attempt 1)."""
    async with open_queue(pubsub_url) as queue:
        for _ in range(2):
            request_id = new_request_id()
            await queue.send("hello", request_id)
            got: list[Any] = []
            with anyio.fail_after(10):
                while not got:  # published is not yet pullable on every server
                    got = await queue.receive("hello", wait=0.0)
            assert [(d.request_id, d.attempt) for d in got] == [(request_id, 1)]
            await queue.ack(got[0])


async def test_a_message_held_by_a_kept_pull_near_its_deadline_is_given_back(
    pubsub_url: str,
) -> None:
    """A kept pull catches a message while nobody receives (a dequeuer whose container is not
    ready); when the next receive comes near the end of that message's first ack deadline,
    the message is given back and delivered afresh (the next attempt, a lease that is really
    held) rather than handed out on a lease that may be someone else's by then."""
    async with open_queue(pubsub_url + "&ack_deadline=10") as queue:
        assert await queue.receive("hello", wait=0.2) == []  # leaves its pull open
        request_id = new_request_id()
        await queue.send("hello", request_id)
        await anyio.sleep(8.5)  # the kept pull has it; 10 s - 2 s margin have passed
        delivery = await receive_one(queue, "hello", lease=5.0)
        assert (delivery.request_id, delivery.attempt) == (request_id, 2)
        await queue.extend(delivery, 5.0)
        await queue.ack(delivery)


def test_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    settings = parse_pubsub_url("pubsub://my-project")
    assert (settings.project, settings.prefix, settings.endpoint) == (
        "my-project",
        "chute",
        GOOGLE_ENDPOINT,
    )
    assert not settings.emulator
    assert settings.subscription(settings.name("hello")) == (
        "projects/my-project/subscriptions/chute-hello"
    )
    assert settings.message_retention == 7 * 86400
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    emulated = parse_pubsub_url("pubsub://my-project/jobs?retention=30d")
    assert (emulated.endpoint, emulated.emulator, emulated.prefix) == (
        "http://127.0.0.1:8085",
        True,
        "jobs",
    )
    assert emulated.message_retention == 7 * 86400  # Pub/Sub's limit
    for bad, complaint in [
        ("pubsub://My_Project", "project id"),
        ("pubsub://my-project/a/b", "prefix"),
        ("pubsub://my-project/goog", "prefix"),
        ("pubsub://my-project?ack_deadline=5", "ack_deadline"),
        ("pubsub://my-project?max_delivery_attempts=101", "max_delivery_attempts"),
        ("pubsub://my-project?visibility=3", "unknown parameter"),
    ]:
        with pytest.raises(ConfigError, match=complaint):
            parse_pubsub_url(bad)


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


def test_keda_trigger_for_pubsub_queues() -> None:
    [api] = loads_apis(API_YAML)
    hooks = K8sHooks(PluginManager())  # every installed plugin, as `chute render` sees them
    trigger = hooks.keda_trigger(
        queue_url="pubsub://prod-project/jobs", queue_name="hello", api=api, cluster={}
    )
    assert trigger == {
        "type": "gcp-pubsub",
        "metadata": {
            "subscriptionName": "projects/prod-project/subscriptions/jobs-hello",
            "mode": "SubscriptionSize",
            "value": "3",
        },
        "authenticationRef": {"name": "chute-gcp"},
    }
    assert plugin.chute_keda_trigger(queue_url="gs://b/x", queue_name="hello", api=api) is None
