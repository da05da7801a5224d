"""chute.webhooks against a real HTTP receiver and a real SQLite store: signatures (checked with
the snippet from docs/webhooks.md), retries, the outcome on the record, bounds, shutdown."""

from __future__ import annotations

import base64
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from chute.backends.base import Store
from chute.config import API, Retries, Webhook, loads_apis
from chute.protocol import ErrorInfo, Status, result_response
from chute.registry import open_store
from chute.testing.receiver import WebhookReceiver
from chute.testing.store import body_of, new_record
from chute.webhooks import WebhookSender, WebhookVerificationError, sign, verify

ROOT = Path(__file__).resolve().parents[3]
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
FAST = Retries(initial_backoff="50ms", max_backoff="200ms", jitter=False)

pytestmark = pytest.mark.anyio


def docs_snippet() -> dict[str, Any]:
    """Run the verification snippet of docs/webhooks.md; return its namespace."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    match = re.search(r"<!-- verify-snippet -->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/webhooks.md lost its verify snippet"
    namespace: dict[str, Any] = {}
    exec(compile(match[1], "docs/webhooks.md", "exec"), namespace)
    return namespace


def api_with(url: str = "http://127.0.0.1:9/unused", **webhook: Any) -> API:
    [api] = loads_apis(
        msgspec.yaml.encode(
            [
                {
                    "name": "hooks",
                    "kind": "AsyncAPI",
                    "pod": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
                    "webhook": {"url": url, "secret_env": "HOOK_SECRET", **webhook},
                }
            ]
        )
    )
    return api


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite:///{tmp_path / 'chute.db'}") as s:
        yield s


async def finished(store: Store, to: Status = Status.COMPLETED, **extra: Any) -> Any:
    record = await store.create(new_record("hooks", extra=extra), body_of(b"{}"))
    if to in (Status.CANCELLED, Status.EXPIRED):
        return await store.transition("hooks", record.id, to)
    await store.transition("hooks", record.id, Status.IN_PROGRESS, attempt=1)
    if to is Status.COMPLETED:
        return await store.transition("hooks", record.id, to, attempt=1, result=b'{"label":"cat"}')
    error = ErrorInfo("container_status", "got 500", status_code=500, body="oops")
    return await store.transition("hooks", record.id, to, attempt=1, error=error)


async def webhook_of(store: Store, request_id: str, status: str) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            record = await store.get("hooks", request_id)
            assert record is not None
            outcome = record.extra.get("webhook")
            if outcome and outcome["status"] == status:
                assert isinstance(outcome, dict)
                return outcome
            await anyio.sleep(0.02)


async def test_signed_delivery_carries_the_get_body(
    store: Store, receiver: WebhookReceiver
) -> None:
    api = api_with(receiver.url)
    record = await finished(store)
    async with WebhookSender(environ={"HOOK_SECRET": SECRET}) as sender:
        sender.notify(store, api, record, b'{"label":"cat"}')
        [got] = await anyio.to_thread.run_sync(receiver.wait, 1)
    assert got.path == "/hook"
    expected = msgspec.json.encode(result_response(record, msgspec.Raw(b'{"label":"cat"}')))
    assert got.body == expected
    assert msgspec.json.decode(got.body)["result"] == {"label": "cat"}
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == f"msg_{record.id}_completed_1"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    # The receiver's stdlib check from the docs accepts it, and refuses any tampering.
    verify_webhook = docs_snippet()["verify_webhook"]
    assert verify_webhook(SECRET, got.headers, got.body) is True
    assert verify_webhook(SECRET, got.headers, got.body + b" ") is False
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    assert verify_webhook(other, got.headers, got.body) is False
    verify(SECRET, got.headers, got.body)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(other, got.headers, got.body)
    with pytest.raises(WebhookVerificationError, match="too far"):
        verify(SECRET, got.headers, got.body, now=time.time() + 3600)
    outcome = await webhook_of(store, record.id, "delivered")
    assert outcome["event"] == "completed"
    assert (outcome["attempts"], outcome["status_code"]) == (1, 204)
    assert "error" not in outcome


def test_signature_matches_the_standard_webhooks_example() -> None:
    """The worked example of the Standard Webhooks spec (its reference libraries' test)."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert (
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


async def test_failed_deliveries_are_retried_then_delivered(
    store: Store, receiver: WebhookReceiver
) -> None:
    receiver.plan = [500, 503]
    api = api_with(receiver.url, events=["failed"])
    record = await finished(store, Status.FAILED)
    async with WebhookSender(backoff=FAST, environ={"HOOK_SECRET": SECRET}) as sender:
        sender.notify(store, api, record)
        first, second, third = await anyio.to_thread.run_sync(receiver.wait, 3)
    assert [d.answered for d in (first, second, third)] == [500, 503, 204]
    # One event: the same id and body on every attempt, each freshly signed.
    assert {d.headers["webhook-id"] for d in (first, second, third)} == {
        f"msg_{record.id}_failed_1"
    }
    assert first.body == second.body == third.body
    assert msgspec.json.decode(third.body)["error"]["status_code"] == 500
    for delivery in (first, second, third):
        verify(SECRET, delivery.headers, delivery.body)
    assert second.at - first.at >= 0.04
    assert third.at - second.at >= 0.08
    outcome = await webhook_of(store, record.id, "delivered")
    assert outcome["attempts"] == 3


async def test_gives_up_after_the_retry_time(store: Store, receiver: WebhookReceiver) -> None:
    receiver.plan = [500] * 100
    api = api_with(receiver.url)
    record = await finished(store, Status.CANCELLED)
    async with WebhookSender(
        backoff=FAST, retry_for=0.5, environ={"HOOK_SECRET": SECRET}
    ) as sender:
        sender.notify(store, api, record)
        outcome = await webhook_of(store, record.id, "failed")
    assert outcome["event"] == "cancelled"
    assert outcome["status_code"] == 500
    assert outcome["error"] == "receiver answered 500"
    assert 2 <= outcome["attempts"] == len(receiver.deliveries()) <= 20


async def test_unreachable_receiver_and_a_pending_outcome(store: Store) -> None:
    api = api_with("http://127.0.0.1:9/closed")  # discard port: connection refused
    record = await finished(store)
    async with WebhookSender(
        backoff=Retries(initial_backoff="30s", max_backoff="30s"),
        close_timeout=0.5,
        environ={"HOOK_SECRET": SECRET},
    ) as sender:
        sender.notify(store, api, record, b"{}")
        outcome = await webhook_of(store, record.id, "pending")
    assert outcome["attempts"] == 1
    assert "status_code" not in outcome
    assert "Connect" in outcome["error"]


async def test_a_missing_secret_fails_without_sending(
    store: Store, receiver: WebhookReceiver
) -> None:
    api = api_with(receiver.url)
    record = await finished(store)
    async with WebhookSender(backoff=FAST, environ={}) as sender:
        sender.notify(store, api, record, b"{}")
        outcome = await webhook_of(store, record.id, "failed")
    assert "HOOK_SECRET" in outcome["error"]
    assert outcome["attempts"] == 1
    assert receiver.deliveries() == []


async def test_events_url_override_and_unsigned(store: Store, receiver: WebhookReceiver) -> None:
    api = api_with(
        receiver.url, events=["failed"], request_urls=["127.0.0.1"], private_targets=True
    )
    completed = await finished(store)
    override = await finished(store, Status.FAILED, webhook_url=receiver.url + "/mine")
    async with WebhookSender(backoff=FAST, environ={"HOOK_SECRET": SECRET}) as sender:
        sender.notify(store, api, completed, b"{}")  # not subscribed: nothing sent
        sender.notify(store, api, override)
        [got] = await anyio.to_thread.run_sync(receiver.wait, 1)
        # An API whose webhook has no url still honours an allowed per-request URL: every
        # event, unsigned.
        assert api.webhook is not None
        bare = msgspec.structs.replace(
            api,
            webhook=Webhook(request_urls=api.webhook.request_urls, private_targets=True),
        )
        expired = await finished(store, Status.EXPIRED, webhook_url=receiver.url + "/bare")
        sender.notify(store, bare, expired)
        sender.notify(store, bare, completed, b"{}")  # no URL at all: nothing sent
        _, unsigned = await anyio.to_thread.run_sync(receiver.wait, 2)
    assert got.path == "/hook/mine"
    assert unsigned.path == "/hook/bare"
    assert "webhook-signature" not in unsigned.headers
    assert unsigned.headers["webhook-id"] == f"msg_{expired.id}_expired_0"
    assert len(receiver.deliveries()) == 2
    record = await store.get("hooks", completed.id)
    assert record is not None
    assert "webhook" not in record.extra


async def test_never_blocks_and_stays_bounded(store: Store, receiver: WebhookReceiver) -> None:
    """A slow receiver: notify returns at once; with one slot and two waiting places, the
    oldest waiting delivery is dropped and counted; shutdown waits only its timeout."""
    receiver.delay = 1.0
    api = api_with(receiver.url)
    records = [await finished(store) for _ in range(4)]
    outcomes: list[str] = []
    sender = WebhookSender(
        max_in_flight=1,
        max_pending=2,
        close_timeout=0.3,
        observe=outcomes.append,
        environ={"HOOK_SECRET": SECRET},
    )
    async with sender:
        started = time.monotonic()
        sender.notify(store, api, records[0], b"{}")
        await anyio.sleep(0.3)  # the first is being sent (the receiver sleeps)
        for record in records[1:]:
            sender.notify(store, api, record, b"{}")  # returns at once: notify is synchronous
        assert outcomes == ["dropped"]  # records[1] made room for records[3]
    closed = time.monotonic() - started
    assert closed < 5.0
    deliveries = await anyio.to_thread.run_sync(receiver.wait, 1)
    ids = {msgspec.json.decode(d.body)["id"] for d in deliveries}
    assert records[1].id not in ids
    assert records[0].id in ids


async def test_a_store_that_fails_does_not_stop_delivery(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """The outcome cannot be recorded (the record is gone): the delivery still happens."""
    async with open_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
        record = await finished(store)
        await store.delete("hooks", record.id)
        async with WebhookSender(environ={"HOOK_SECRET": SECRET}) as sender:
            sender.notify(store, api_with(receiver.url), record, b"{}")
            await anyio.to_thread.run_sync(receiver.wait, 1)


def test_webhook_struct_defaults() -> None:
    hook = Webhook(url="https://example.com/")
    assert hook.events == ("completed", "failed", "cancelled", "expired")
    assert hook.secret_env is None


@pytest.mark.anyio
async def test_a_sender_closed_right_after_opening_closes_cleanly() -> None:
    """A process that starts and stops at once (a failed startup) must not crash on exit."""
    sender = WebhookSender()
    await sender.__aenter__()
    await sender.aclose()
