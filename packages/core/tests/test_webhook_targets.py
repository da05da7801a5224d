"""Issue 13, item 6: per-request webhook URLs are opt-in per API, on an allowlist, and never
reach a non-public address unless the API allows it — checked at submit (the URL) and at every
delivery (the addresses its host resolves to, which the POST then uses)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from chute import open_store
from chute._webhook_targets import (
    TargetRefused,
    check_request_url,
    is_public,
    matches,
    pinned,
    resolve_target,
    url_pattern,
)
from chute.backends.base import Store
from chute.config import API, loads_apis
from chute.errors import ConfigError
from chute.protocol import Status
from chute.testing import body_of, new_record
from chute.testing.gateway import gateway_process
from chute.testing.receiver import WebhookReceiver
from chute.webhooks import WebhookSender

ALLOW = ["hooks.example.com", "*.example.org", "https://client.example.net/done/"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/x", True),
        ("http://HOOKS.example.com./x", True),
        ("https://hooks.example.com.evil.io/x", False),
        ("https://a.b.example.org/", True),
        ("https://example.org/", False),  # *. is for subdomains
        ("https://evilexample.org/", False),
        ("https://client.example.net/done/42", True),
        ("https://client.example.net/done", True),
        ("https://client.example.net/donex", False),
        ("https://client.example.net/other", False),
        ("http://client.example.net/done/42", False),  # another scheme
        ("https://client.example.net:8443/done/42", False),  # another port
        ("https://elsewhere.com/", False),
    ],
)
def test_the_allowlist(url: str, allowed: bool) -> None:
    assert matches(url, ALLOW) is allowed
    # The schema's pattern agrees (it describes the plain form: lower case, no user info).
    plain = url == url.lower() and "@" not in url and ".:" not in url and "./" not in url
    if plain:
        assert bool(re.fullmatch(url_pattern(tuple(ALLOW)), url)) is allowed, url


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared address space
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:93.184.216.34", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_check_at_submit() -> None:
    with pytest.raises(TargetRefused, match="not enabled"):
        check_request_url("https://hooks.example.com/", (), private_targets=False)
    with pytest.raises(TargetRefused, match="allowlist"):
        check_request_url("https://other.com/", ALLOW, private_targets=False)
    for literal in ("http://127.0.0.1/", "http://[::1]/", "http://169.254.169.254/latest"):
        with pytest.raises(TargetRefused, match="not a public address"):
            check_request_url(
                literal, ["127.0.0.1", "[::1]", "169.254.169.254"], private_targets=False
            )
        check_request_url(literal, ["127.0.0.1", "[::1]", "169.254.169.254"], private_targets=True)
    check_request_url("https://hooks.example.com/x", ALLOW, private_targets=False)


@pytest.mark.anyio
async def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery() -> None:
    with pytest.raises(TargetRefused, match="not a public address"):
        await resolve_target("http://localhost:8080/x", private_targets=False)
    addresses = await resolve_target("http://localhost:8080/x", private_targets=True)
    assert addresses
    assert all(not is_public(a) for a in addresses)


def test_pinning_keeps_the_request_the_same() -> None:
    url, host, server_name = pinned(
        "https://u:p@hooks.example.com:8443/a?b=1", ipaddress.ip_address("93.184.216.34")
    )
    assert url == "https://u:p@93.184.216.34:8443/a?b=1"
    assert host == "hooks.example.com:8443"
    assert server_name == "hooks.example.com"
    url, host, _ = pinned("http://h.example.com/", ipaddress.ip_address("2001:db8::1"))
    assert url == "http://[2001:db8::1]/"
    assert host == "h.example.com"


def api_with(**webhook: Any) -> API:
    [api] = loads_apis(
        msgspec.yaml.encode(
            [
                {
                    "name": "hooks",
                    "kind": "AsyncAPI",
                    "pod": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
                    "webhook": webhook,
                }
            ]
        )
    )
    return api


def test_config_needs_a_url_or_request_urls_and_checks_entries() -> None:
    with pytest.raises(ConfigError, match="expected url, request_urls or both"):
        api_with(events=["completed"])
    with pytest.raises(ConfigError, match=r"request_urls\[1\]"):
        api_with(request_urls=["hooks.example.com", "not a host"])
    assert api_with(request_urls=["*.example.com", "https://x.example.com/a/"]).webhook


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite:///{tmp_path / 'chute.db'}") as s:
        yield s


async def delivery_outcome(store: Store, api: API, url: str) -> dict[str, Any]:
    record = await store.create(new_record("hooks", extra={"webhook_url": url}), body_of(b"{}"))
    record = await store.transition("hooks", record.id, Status.CANCELLED)
    async with WebhookSender(environ={}) as sender:
        sender.notify(store, api, record)
        with anyio.fail_after(20):
            while True:
                found = await store.get("hooks", record.id)
                assert found is not None
                outcome = found.extra.get("webhook")
                if outcome and outcome["status"] != "pending":
                    assert isinstance(outcome, dict)
                    return outcome
                await anyio.sleep(0.02)


@pytest.mark.anyio
async def test_a_delivery_to_a_name_on_the_allowlist_that_resolves_to_loopback_is_refused(
    store: Store, receiver: WebhookReceiver
) -> None:
    """The DNS side of SSRF: ``localhost`` is on the allowlist, but it resolves to loopback."""
    port = httpx.URL(receiver.url).port
    url = f"http://localhost:{port}/hook"
    refused = await delivery_outcome(store, api_with(request_urls=["localhost"]), url)
    assert refused["status"] == "failed"
    assert "refused" in refused["error"]
    assert refused["attempts"] == 1  # never retried
    assert receiver.deliveries() == []
    # Allowed explicitly, the same URL is delivered, to the checked address, as the same
    # request (its Host header is the URL's).
    allowed = api_with(request_urls=["localhost"], private_targets=True)
    delivered = await delivery_outcome(store, allowed, url)
    assert delivered["status"] == "delivered"
    [got] = receiver.deliveries()
    assert got.headers["host"] == f"localhost:{port}"


@pytest.mark.anyio
async def test_a_url_taken_off_the_allowlist_is_not_delivered(
    store: Store, receiver: WebhookReceiver
) -> None:
    """The API's allowlist is checked again at delivery (the config may have changed)."""
    api = api_with(
        url="https://example.invalid/", request_urls=["hooks.example.com"], private_targets=True
    )
    outcome = await delivery_outcome(store, api, receiver.url)
    assert outcome["status"] == "failed"
    assert "allowlist" in outcome["error"]
    assert receiver.deliveries() == []


API_FILE = """\
- name: closed
  kind: AsyncAPI
  pod: {containers: [{name: api, image: a:1}]}
- name: listed
  kind: AsyncAPI
  webhook:
    request_urls: [hooks.example.com, 10.0.0.8]
  pod: {containers: [{name: api, image: a:1}]}
"""


def test_the_gateway_refuses_unlisted_and_private_request_urls(tmp_path: Path) -> None:
    api_file = tmp_path / "api.yaml"
    api_file.write_text(API_FILE)
    url = f"sqlite:///{tmp_path / 'chute.db'}"
    with (
        gateway_process(api_file, queue_url=url, store_url=url) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as http,
    ):

        def submit(api: str, hook: str) -> httpx.Response:
            return http.post(f"/{api}", json={}, headers={"X-Chute-Webhook": hook})

        closed = submit("closed", "https://hooks.example.com/x")
        assert closed.status_code == 400
        assert "not enabled" in closed.json()["error"]["message"]
        assert submit("listed", "https://elsewhere.com/x").status_code == 400
        private = submit("listed", "http://10.0.0.8/x")
        assert private.status_code == 400
        assert "not a public address" in private.json()["error"]["message"]
        assert submit("listed", "https://hooks.example.com/x").status_code == 200
