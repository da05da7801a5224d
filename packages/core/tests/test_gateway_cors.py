"""CORS as Cortex's gateway answered it (any origin by default), on a real gateway process over
SQLite and Redis: browsers' preflights, the headers on every route, configured origins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_support import HELLO_API, backend_url

from chute.errors import ConfigError
from chute.gateway._cors import CORSPolicy
from chute.testing.gateway import gateway_process

APP = "https://app.example"


@pytest.fixture(scope="module")
def api_text() -> str:
    return HELLO_API


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from backend_url(request, tmp_path_factory.mktemp("db"), "cors")


def client(api_file: Path, backend: str, *args: str) -> Iterator[httpx.Client]:
    with (
        gateway_process(api_file, queue_url=backend, store_url=backend, args=args) as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as http,
    ):
        yield http


@pytest.fixture(scope="module")
def http(api_file: Path, backend: str) -> Iterator[httpx.Client]:
    yield from client(api_file, backend)  # the default: any origin


def test_a_preflight_is_answered_for_any_origin(http: httpx.Client) -> None:
    response = http.options(
        "/hello",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, idempotency-key",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "DELETE" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == (
        "content-type, authorization, idempotency-key"
    )
    assert response.headers["vary"] == "Origin"


def test_every_route_carries_the_cors_headers(http: httpx.Client) -> None:
    headers = {"Origin": APP}
    submitted = http.post("/hello", json={"x": 1}, headers=headers)
    assert submitted.status_code == 200
    request_id = submitted.json()["id"]
    for response in (
        submitted,
        http.get(f"/hello/{request_id}", headers=headers),
        http.get("/hello/no-such-id", headers=headers),  # errors too: the browser reads them
        http.get("/healthz", headers=headers),
        http.delete(f"/hello/{request_id}", headers=headers),
    ):
        assert response.headers["access-control-allow-origin"] == APP, response.url
        assert "X-Cortex-Request-ID" in response.headers["access-control-expose-headers"]


def test_without_origin_nothing_changes(http: httpx.Client) -> None:
    response = http.post("/hello", json={"x": 1})
    assert response.status_code == 200
    assert not [h for h in response.headers if h.startswith("access-control-")]
    # A plain OPTIONS (no preflight) is a method the route does not serve, as before.
    assert http.options("/hello").status_code == 405


def test_configured_origins_only(api_file: Path, backend: str) -> None:
    for http in client(api_file, backend, "--cors-origins", f"{APP},http://localhost:3000"):
        other = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        refused = http.options("/hello", headers=other)
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        response = http.post("/hello", json={}, headers={"Origin": "https://evil.example"})
        assert response.status_code == 200  # served, but the browser keeps it from the page
        assert "access-control-allow-origin" not in response.headers
        ok = http.get("/healthz", headers={"Origin": "http://localhost:3000"})
        assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_cors_can_be_turned_off(api_file: Path, backend: str) -> None:
    for http in client(api_file, backend, "--cors-origins", "none"):
        response = http.get("/healthz", headers={"Origin": APP})
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("text", "message"),
    [("app.example", "not an origin"), ("*,https://a.example", "give it alone")],
)
def test_bad_origin_lists_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CORSPolicy.parse(text)
