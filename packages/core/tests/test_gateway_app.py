"""The gateway's ASGI app in-process, under a real hypercorn server on a free port, with a real
SQLite file: limits, odd requests, startup failures and unexpected errors."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from bare_backend import register_bare
from gateway_support import HELLO_API, serving

from chute.cli import parse_size
from chute.config import API, load_apis
from chute.errors import ConfigError, UnknownSchemeError
from chute.gateway import Gateway, serve
from chute.gateway._routing import Kind, Router


@pytest.fixture
def apis(tmp_path: Path) -> list[API]:
    path = tmp_path / "api.yaml"
    path.write_text(HELLO_API)
    return load_apis(path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "chute.db"


@asynccontextmanager
async def running(app: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` with hypercorn on a free port; yield a client for it; stop gracefully."""
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


def rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        count: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return count


async def chunks(size: int, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.mark.anyio
async def test_the_limit_is_inclusive_and_an_overflowing_chunked_body_leaves_nothing(
    apis: list[API], db: Path
) -> None:
    url = f"sqlite:///{db}"
    app = Gateway(apis, queue_url=url, store_url=url, max_body_size=1024)
    async with running(app) as http:
        assert (await http.post("/hello", content=b"x" * 1024)).status_code == 200
        assert (await http.post("/hello", content=chunks(512, 2))).status_code == 200
        assert rows(db, "store_records") == 2
        chunks_before = rows(db, "store_chunks")

        too_big = await http.post("/hello", content=b"x" * 1025)
        assert too_big.status_code == 413
        assert too_big.json()["error"]["type"] == "payload_too_large"
        streamed = await http.post("/hello", content=chunks(512, 40))
        assert streamed.status_code == 413
        assert "1024 bytes" in streamed.json()["error"]["message"]
        # Still serving on new connections afterwards.
        assert (await http.get("/healthz")).status_code == 200
    assert rows(db, "store_records") == 2
    assert rows(db, "store_chunks") == chunks_before
    assert rows(db, "queue_messages") == 2


@pytest.mark.anyio
async def test_the_stores_own_smaller_limit_wins(apis: list[API], db: Path) -> None:
    store_url = f"sqlite:///{db}?max_payload_size=100"
    app = Gateway(apis, queue_url=f"sqlite:///{db}", store_url=store_url, max_body_size=1024)
    async with running(app) as http:
        declared = await http.post("/hello", content=b"x" * 101)
        assert declared.status_code == 413
        assert "100 bytes" in declared.json()["error"]["message"]
        streamed = await http.post("/hello", content=chunks(50, 3))
        assert streamed.status_code == 413
        assert (await http.post("/hello", content=b"x" * 100)).status_code == 200
    assert rows(db, "store_records") == 1


@pytest.mark.anyio
async def test_two_content_types_are_a_bad_request(apis: list[API], db: Path) -> None:
    url = f"sqlite:///{db}"
    async with running(Gateway(apis, queue_url=url, store_url=url)) as http:
        response = await http.post(
            "/hello",
            content=b"{}",
            headers=[("Content-Type", "application/json"), ("Content-Type", "text/plain")],
        )
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "bad_request"


@pytest.mark.anyio
async def test_an_unexpected_error_is_a_500_json_and_is_logged(
    apis: list[API], db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{db}"
    async with running(Gateway(apis, queue_url=url, store_url=url)) as http:
        request_id = (await http.post("/hello", json={})).json()["id"]
        with sqlite3.connect(db) as conn:  # corrupt the stored record behind the store's back
            conn.execute("UPDATE store_records SET record = ? WHERE id = ?", (b"{", request_id))
        with caplog.at_level(logging.ERROR, logger="chute.gateway"):
            response = await http.get(f"/hello/{request_id}")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"type": "internal_error", "message": "internal error; see the gateway's log"}
    }
    assert "Traceback" not in response.text
    assert any(r.message == "unexpected error" and r.exc_info for r in caplog.records)


@pytest.mark.anyio
async def test_serve_raises_the_startup_error(apis: list[API]) -> None:
    app = Gateway(apis, queue_url="nosuch://q", store_url="nosuch://s")
    with pytest.raises(UnknownSchemeError, match="nosuch://"):
        await serve(app, port=0, shutdown_trigger=anyio.Event().wait)


def test_routes(apis: list[API]) -> None:
    router = Router(apis)
    assert router.match("/hello") == (Kind.SUBMIT, apis[0], "")
    assert router.match("/hello/") == (Kind.SUBMIT, apis[0], "")
    assert router.match("/hello/abc") == (Kind.RESULT, apis[0], "abc")
    assert router.match("/hello/abc/") == (Kind.RESULT, apis[0], "abc")
    assert router.match("/hello/abc/def") is None
    assert router.match("/healthz") == (Kind.HEALTH, None, "")
    assert router.match("/nope") is None


def api(name: str, endpoint: str | None = None) -> API:
    import msgspec

    spec: dict[str, object] = {
        "name": name,
        "kind": "AsyncAPI",
        "pod": {"containers": [{"name": "c", "image": "i"}]},
    }
    if endpoint is not None:
        spec["networking"] = {"endpoint": endpoint}
    return msgspec.convert(spec, API)


def test_an_api_at_the_root() -> None:
    root = api("root", "/")
    router = Router([root])
    assert router.match("/") == (Kind.SUBMIT, root, "")
    assert router.match("/abc") == (Kind.RESULT, root, "abc")
    assert router.match("/metrics") == (Kind.METRICS, None, "")


def test_clashing_endpoints_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        Router([api("metrics")])
    with pytest.raises(ConfigError, match="both use endpoint /x"):
        Router([api("a", "/x"), api("b", "x/")])


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100MiB", 100 * 1024 * 1024),
        ("512KiB", 512 * 1024),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("10MB", 10_000_000),
        ("1kB", 1000),
        ("2048", 2048),
        ("7 B", 7),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "-1", "1 XB", "ten"])
def test_parse_size_rejects(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


@pytest.mark.anyio
async def test_a_queue_that_cannot_count_is_501_and_left_out_of_the_metrics(
    apis: list[API], db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The queue declares no depth: the queue route says so (never made-up figures), and a
    scrape answers without the depth series and without a warning per scrape."""
    register_bare()
    app = Gateway(apis, queue_url=f"bare:///{db}", store_url=f"sqlite:///{db}")
    with caplog.at_level(logging.WARNING, logger="chute.gateway"):
        async with running(app) as http:
            submitted = await http.post("/hello", json={})
            assert submitted.status_code == 200
            response = await http.get("/queues/hello")
            assert response.status_code == 501
            assert response.json()["error"] == {
                "type": "not_implemented",
                "message": "the queue of hello (BareSqliteQueue) cannot count its messages: "
                "no queue depth",
            }
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert "chute_gateway_requests_total" in metrics.text
            assert "chute_queue_depth{" not in metrics.text
    assert "queue depth unavailable" not in caplog.text
