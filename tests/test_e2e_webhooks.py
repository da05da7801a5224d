"""Webhooks through real processes: a gateway, a dequeuer with a webhook secret in its
environment, the example container and a real receiver, on SQLite and Redis. The delivery
carries what ``GET`` answers, signed, and ``GET`` then shows the delivery's outcome."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import msgspec
import pytest
from e2e_support import API, Processes, Stack, backend_url, eventually, request_status

from chute.testing.http import http
from chute.testing.receiver import WebhookReceiver
from chute.webhooks import verify

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path, request)


def test_signed_webhook_with_the_get_body_and_its_outcome_in_get(
    tmp_path: Path, processes: Processes, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_WEBHOOK_SECRET", SECRET)  # inherited by the processes
    with WebhookReceiver() as receiver:
        receiver.plan = [503]  # the first delivery fails and is retried
        stack = Stack(processes, tmp_path, backend)
        with stack.api_file.open("a") as api_file:
            api_file.write(
                f"  webhook:\n    url: {receiver.url}\n    secret_env: E2E_WEBHOOK_SECRET\n"
            )
        stack.start_container()
        stack.start_gateway()
        stack.start_dequeuer()
        assert os.environ["E2E_WEBHOOK_SECRET"] == SECRET

        submitted = http().post(f"{stack.gateway_url}/{API}", json={"hello": "hook"}, timeout=30)
        request_id = submitted.json()["id"]
        body = eventually(
            lambda: (
                (b := request_status(stack.gateway_url, request_id))
                .get("webhook", {})
                .get("status")
                == "delivered"
                and b
            ),
            "GET to show the delivered webhook",
        )
        first, second = receiver.wait(2)

    assert body["status"] == "completed"
    assert body["webhook"]["event"] == "completed"
    assert (body["webhook"]["attempts"], body["webhook"]["status_code"]) == (2, 204)
    assert (first.answered, second.answered) == (503, 204)
    for delivery in (first, second):
        verify(SECRET, delivery.headers, delivery.body)
    sent = msgspec.json.decode(second.body)
    # The delivery is GET's answer at completion: the same, minus the webhook's own outcome.
    assert sent == {k: v for k, v in body.items() if k != "webhook"}
    assert sent["result"]
