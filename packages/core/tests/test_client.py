"""chute.Client and chute.AsyncClient (and ``chute submit`` / ``chute get``) against a real
gateway process on a real SQLite file; requests are finished through the store's own API."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import chute
from chute import AsyncClient, Client, open_store
from chute.client import DEFAULT_GATEWAY_URL, Result, gateway_url
from chute.config import load_apis
from chute.errors import (
    APIError,
    ConfigError,
    GatewayUnreachable,
    InvalidRequestId,
    VersionMismatchWarning,
    WaitTimeout,
)
from chute.protocol import ErrorInfo, Status
from chute.testing import free_port, http
from chute.testing.gateway import GatewayProcess, gateway_process


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHUTE_GATEWAY_URL", "CORTEX_CLI_CONFIG_DIR", "CORTEX_VERSION", "CHUTE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def gateway(api_file: Path, db_url: str) -> Iterator[GatewayProcess]:
    with gateway_process(api_file, queue_url=db_url, store_url=db_url) as running:
        yield running


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[Client]:
    with Client(gateway.url, timeout=30) as c:
        yield c


async def _finish(db_url: str, api: str, request_id: str, to: Status, **kwargs: Any) -> None:
    async with open_store(db_url) as store:
        await store.transition(api, request_id, Status.IN_PROGRESS, attempt=1)
        await store.transition(api, request_id, to, attempt=1, **kwargs)


def finish_later(db_url: str, api: str, request_id: str, to: Status, **kwargs: Any) -> None:
    """Finish the request from another thread a moment from now, as a dequeuer would."""

    def work() -> None:
        time.sleep(0.3)
        anyio.run(lambda: _finish(db_url, api, request_id, to, **kwargs))

    threading.Thread(target=work, daemon=True).start()


Stored = tuple[str | None, dict[str, str], bytes]


def stored_payload(db_url: str, api: str, request_id: str) -> Stored:
    """The stored content type, headers and payload of a request."""

    async def read() -> Stored:
        async with open_store(db_url) as store:
            record = await store.get(api, request_id)
            assert record is not None
            body = b"".join([c async for c in store.payload(api, request_id)])
            return record.content_type, dict(record.headers), body

    result: Stored = anyio.run(read)
    return result


# -- the sync client ------------------------------------------------------------------------


def test_submit_json_then_get(client: Client, db_url: str) -> None:
    request_id = client.submit("hello", json={"text": "hi"})
    content_type, _, body = stored_payload(db_url, "hello", request_id)
    assert content_type == "application/json"
    assert msgspec.json.decode(body) == {"text": "hi"}
    result = client.get("hello", request_id)
    assert isinstance(result, Result)
    assert result.id == request_id
    assert result.status is Status.IN_QUEUE
    assert not result.done
    assert result.result is None
    assert isinstance(result.created_at, datetime)
    assert result.created_at.tzinfo is not None


def test_submit_content_and_headers_reach_the_store(client: Client, db_url: str) -> None:
    request_id = client.submit(
        "hello", content=b"\x00\x01raw", headers={"Content-Type": "image/png", "X-Tenant": "t1"}
    )
    content_type, headers, body = stored_payload(db_url, "hello", request_id)
    assert (content_type, headers["x-tenant"], body) == ("image/png", "t1", b"\x00\x01raw")


def test_submit_streams_an_iterator(client: Client, db_url: str) -> None:
    def parts() -> Iterator[bytes]:
        yield b"one,"
        yield b"two"

    request_id = client.submit("hello", content=parts(), headers={"Content-Type": "text/csv"})
    assert stored_payload(db_url, "hello", request_id)[2] == b"one,two"


def test_api_by_endpoint_path_or_api_object(client: Client, api_file: Path) -> None:
    other = next(api for api in load_apis(api_file) if api.name == "other")
    for ref in ("/v1/other", "/v1/other/", "v1/other", other):
        request_id = client.submit(ref, json=1)
        assert client.get(ref, request_id).status is Status.IN_QUEUE
    with pytest.raises(APIError) as info:
        client.submit("other", json=1)  # its endpoint is not /other
    assert info.value.status_code == 404


def test_wait_returns_the_completed_result(client: Client, db_url: str) -> None:
    request_id = client.submit("hello", json={})
    finish_later(db_url, "hello", request_id, Status.COMPLETED, result=b'{"answer": 42}')
    result = client.wait("hello", request_id, timeout=30, poll_interval=0.05)
    assert result.status is Status.COMPLETED
    assert result.done
    assert result.result == {"answer": 42}
    assert isinstance(result.timestamp, datetime)
    assert result.timestamp.tzinfo is not None
    assert abs((datetime.now(UTC) - result.timestamp).total_seconds()) < 60
    assert result.attempts == 1
    assert result.error is None


def test_wait_returns_a_failed_request_with_its_reason(client: Client, db_url: str) -> None:
    request_id = client.submit("hello", json={})
    reason = ErrorInfo(type="user_container_not_reachable", message="connection refused")
    finish_later(db_url, "hello", request_id, Status.FAILED, error=reason)
    result = client.wait("hello", request_id, timeout=30, poll_interval=0.05)
    assert result.status is Status.FAILED
    assert result.done
    assert result.error == reason
    assert result.result is None


def test_wait_times_out(client: Client) -> None:
    request_id = client.submit("hello", json={})
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="still in_queue") as info:
        client.wait("hello", request_id, timeout=0.5, poll_interval=0.05)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started < 10


def test_http_errors_become_api_errors(client: Client) -> None:
    with pytest.raises(APIError) as info:
        client.get("hello", "0123456789abcdef")
    assert (info.value.status_code, info.value.type) == (404, "not_found")
    assert "not found" in info.value.message
    with pytest.raises(APIError) as info:
        client.submit("nope", json={})
    assert (info.value.status_code, info.value.type) == (404, "not_found")
    assert isinstance(info.value, chute.ChuteError)


def test_bad_arguments_fail_before_any_call(client: Client) -> None:
    with pytest.raises(InvalidRequestId):
        client.get("hello", "../../etc/passwd")
    with pytest.raises(ValueError, match="not both"):
        client.submit("hello", json={}, content=b"x")


def test_an_unreachable_gateway() -> None:
    with Client(f"http://127.0.0.1:{free_port()}") as c, pytest.raises(GatewayUnreachable):
        c.submit("hello", json={})


# -- the async client -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_client_round_trip(gateway: GatewayProcess, db_url: str) -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a":'
        yield b" 1}"

    async with AsyncClient(gateway.url) as c:
        request_id = await c.submit(
            "hello", content=parts(), headers={"Content-Type": "application/json"}
        )
        assert (await c.get("hello", request_id)).status is Status.IN_QUEUE

        async with anyio.create_task_group() as tg:

            async def complete() -> None:
                await anyio.sleep(0.3)
                await _finish(db_url, "hello", request_id, Status.COMPLETED, result=b"[1,2]")

            tg.start_soon(complete)
            result = await c.wait("hello", request_id, timeout=30, poll_interval=0.05)
        assert result.status is Status.COMPLETED
        assert result.result == [1, 2]

        json_id = await c.submit("/v1/other", json={"b": 2})
        with pytest.raises(WaitTimeout):
            await c.wait("/v1/other", json_id, timeout=0.3, poll_interval=0.05)
        with pytest.raises(APIError) as info:
            await c.get("hello", "0123456789abcdef")
        assert info.value.status_code == 404


@pytest.mark.anyio
async def test_async_client_unreachable() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(GatewayUnreachable):
            await c.get("hello", "abc")


# -- finding the gateway --------------------------------------------------------------------


def write_cli_config(directory: Path, endpoint: str, default: str = "default") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cli.yaml").write_text(
        f"default_environment: {default}\n"
        "environments:\n"
        "  - name: elsewhere\n"
        "    operator_endpoint: http://127.0.0.1:1\n"
        f"  - name: {default}\n"
        f"    operator_endpoint: {endpoint}\n"
    )


def test_base_url_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gateway_url() == DEFAULT_GATEWAY_URL
    write_cli_config(tmp_path, "http://from-config:1")
    monkeypatch.setenv("CORTEX_CLI_CONFIG_DIR", str(tmp_path))
    assert gateway_url() == "http://from-config:1"
    monkeypatch.setenv("CHUTE_GATEWAY_URL", "http://from-env:2")
    assert gateway_url() == "http://from-env:2"
    assert gateway_url("http://explicit:3") == "http://explicit:3"
    assert Client("http://explicit:3/").base_url == "http://explicit:3"


def test_a_missing_cli_config_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_CLI_CONFIG_DIR", str(tmp_path / "absent"))
    assert gateway_url() == DEFAULT_GATEWAY_URL


def test_a_broken_cli_config_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli.yaml").write_text("environments: [unclosed\n")
    monkeypatch.setenv("CORTEX_CLI_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"cli\.yaml"):
        gateway_url()
    (tmp_path / "cli.yaml").write_text("environments: 3\n")
    with pytest.raises(ConfigError, match=r"cli\.yaml"):
        gateway_url()


def test_the_cortex_client_config_finds_the_gateway(
    gateway: GatewayProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As inside a container: the config file mounted at $CORTEX_CLI_CONFIG_DIR/cli.yaml.
    write_cli_config(tmp_path / "cortex" / "client", gateway.url, default="cluster")
    monkeypatch.setenv("CORTEX_CLI_CONFIG_DIR", str(tmp_path / "cortex" / "client"))
    monkeypatch.setenv("CORTEX_VERSION", chute.__version__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching version warns about nothing
        with Client() as c:
            assert c.base_url == gateway.url
            request_id = c.submit("hello", json={"chained": True})
            assert c.get("hello", request_id).status is Status.IN_QUEUE


def test_a_version_mismatch_warns(gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUTE_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("CORTEX_VERSION", "0.42.1")
    with pytest.warns(VersionMismatchWarning, match=r"0\.42\.1.*" + chute.__version__):
        c = Client()
    with c:
        assert c.get("hello", c.submit("hello", json={})).status is Status.IN_QUEUE
    monkeypatch.setenv("CORTEX_VERSION", f"v{chute.__version__}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Client().close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit URL: nothing was discovered, no warning
        monkeypatch.setenv("CORTEX_VERSION", "0.42.1")
        Client(gateway.url).close()


# -- the command line -----------------------------------------------------------------------


def chute_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("CHUTE_GATEWAY_URL", "CORTEX_CLI_CONFIG_DIR", "CORTEX_VERSION", "CHUTE_API_KEY")
    }
    return subprocess.run(
        [sys.executable, "-m", "chute", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, **(env or {})},
    )


def test_cli_submit_and_get(gateway: GatewayProcess, db_url: str, tmp_path: Path) -> None:
    done = chute_cli("submit", "hello", "--json", '{"x": [1]}', "--gateway", gateway.url)
    assert done.returncode == 0, done.stderr
    request_id = done.stdout.strip()
    content_type, _, body = stored_payload(db_url, "hello", request_id)
    assert (content_type, msgspec.json.decode(body)) == ("application/json", {"x": [1]})

    shown = chute_cli("get", "hello", request_id, "--gateway", gateway.url)
    assert shown.returncode == 0, shown.stderr
    assert msgspec.json.decode(shown.stdout) == {
        **msgspec.json.decode(shown.stdout),
        "id": request_id,
        "status": "in_queue",
    }

    data = tmp_path / "rows.csv"
    data.write_bytes(b"a,b\n")
    from_file = chute_cli(
        "submit", "/v1/other", "--data", f"@{data}", "-H", "Content-Type: text/csv",
        "-H", "X-Job: 7", "--gateway", gateway.url,
    )  # fmt: skip
    assert from_file.returncode == 0, from_file.stderr
    content_type, headers, body = stored_payload(db_url, "other", from_file.stdout.strip())
    assert (content_type, headers["x-job"], body) == ("text/csv", "7", b"a,b\n")

    piped = chute_cli("submit", "hello", "--data", "-", "--gateway", gateway.url, stdin="raw in")
    assert stored_payload(db_url, "hello", piped.stdout.strip())[2] == b"raw in"


def test_cli_submit_wait_prints_the_result(gateway: GatewayProcess, db_url: str) -> None:
    # Finish whichever request shows up next in the queue, as a dequeuer would.
    async def finish_next() -> None:
        async with chute.open_queue(db_url) as queue:
            for _ in range(100):
                deliveries = await queue.receive("hello", wait=0.5, lease=30)
                if deliveries:
                    request_id = deliveries[0].request_id
                    await _finish(db_url, "hello", request_id, Status.COMPLETED, result=b'{"ok":1}')
                    await queue.ack(deliveries[0])
                    return

    worker = threading.Thread(target=lambda: anyio.run(finish_next), daemon=True)

    # Drain what earlier tests queued so the next delivery is ours.
    async def drain() -> None:
        async with chute.open_queue(db_url) as queue:
            while batch := await queue.receive("hello", max_messages=100, wait=0, lease=30):
                for delivery in batch:
                    await queue.ack(delivery)

    anyio.run(drain)
    worker.start()
    done = chute_cli("submit", "hello", "--json", "{}", "--wait", "--gateway", gateway.url)
    worker.join(30)
    assert done.returncode == 0, done.stderr
    result = msgspec.json.decode(done.stdout)
    assert result["status"] == "completed"
    assert result["result"] == {"ok": 1}
    assert "timestamp" in result


def test_cli_errors(gateway: GatewayProcess) -> None:
    missing = chute_cli("get", "hello", "0123456789abcdef", "--gateway", gateway.url)
    assert missing.returncode == 5  # the gateway said no (docs/cli.md)
    assert "404 not_found" in missing.stderr
    bad_json = chute_cli("submit", "hello", "--json", "{nope", "--gateway", gateway.url)
    assert bad_json.returncode == 3  # bad input
    assert "--json is not valid JSON" in bad_json.stderr
    down = chute_cli("get", "hello", "abc", "--gateway", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 4  # unreachable
    assert "cannot reach the gateway" in down.stderr
    for result in (missing, bad_json, down):
        assert "Traceback" not in result.stderr
    waited = chute_cli("submit", "hello", "--wait", "--timeout", "0.3", "--gateway", gateway.url)
    assert waited.returncode == 6  # --wait timed out
    assert "still in_queue" in waited.stderr


def test_cli_finds_the_gateway_from_the_cortex_config_and_warns(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    write_cli_config(tmp_path, gateway.url)
    done = chute_cli(
        "submit",
        "hello",
        "--json",
        "{}",
        env={"CORTEX_CLI_CONFIG_DIR": str(tmp_path), "CORTEX_VERSION": "0.42.1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "VersionMismatchWarning" in done.stderr
    assert "0.42.1" in done.stderr


# -- cancel, idempotency, long-poll, API keys -------------------------------------------------


def long_polls(gateway: GatewayProcess) -> tuple[float, float]:
    """How many long-polls and how many GETs of ``hello`` the gateway has answered."""
    from prometheus_client.parser import text_string_to_metric_families

    text = http().get(f"{gateway.url}/metrics", timeout=30).text
    polls = gets = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("api") != "hello":
                continue
            if sample.name == "chute_gateway_long_poll_duration_seconds_count":
                polls += sample.value
            if sample.name == "chute_gateway_requests_total" and sample.labels["method"] == "GET":
                gets += sample.value
    return polls, gets


def test_wait_long_polls_instead_of_polling(
    client: Client, gateway: GatewayProcess, db_url: str
) -> None:
    request_id = client.submit("hello", json={})
    polls, gets = long_polls(gateway)

    def work() -> None:
        time.sleep(1.5)
        anyio.run(lambda: _finish(db_url, "hello", request_id, Status.COMPLETED, result=b"7"))

    threading.Thread(target=work, daemon=True).start()
    result = client.wait("hello", request_id, timeout=30)
    assert result.status is Status.COMPLETED
    assert result.result == 7
    after_polls, after_gets = long_polls(gateway)
    # One held GET answered when the result landed (a polling loop makes one every 0.1-2 s).
    assert after_polls - polls == 1
    assert after_gets - gets == 1


def test_cancel(client: Client, db_url: str) -> None:
    request_id = client.submit("hello", json={})
    cancelled = client.cancel("hello", request_id)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.done
    assert client.wait("hello", request_id, timeout=5).status is Status.CANCELLED
    finished = client.submit("hello", json={})
    anyio.run(lambda: _finish(db_url, "hello", finished, Status.COMPLETED, result=b"1"))
    with pytest.raises(APIError) as info:
        client.cancel("hello", finished)
    assert (info.value.status_code, info.value.type) == (409, "conflict")
    with pytest.raises(APIError) as info:
        client.cancel("hello", "0123456789abcdef")
    assert info.value.status_code == 404


def test_submit_with_an_idempotency_key(client: Client) -> None:
    key = f"job-{time.time_ns()}"
    first = client.submit("hello", json={"n": 1}, idempotency_key=key)
    assert client.submit("hello", json={"n": 1}, idempotency_key=key) == first
    with pytest.raises(APIError) as info:
        client.submit("hello", json={"n": 2}, idempotency_key=key)
    assert info.value.status_code == 409


@pytest.mark.anyio
async def test_async_cancel_wait_and_idempotency(gateway: GatewayProcess, db_url: str) -> None:
    async with AsyncClient(gateway.url, timeout=30) as client:
        key = f"async-{time.time_ns()}"
        request_id = await client.submit("hello", json={}, idempotency_key=key)
        assert await client.submit("hello", json={}, idempotency_key=key) == request_id
        finish_later(db_url, "hello", request_id, Status.COMPLETED, result=b'"ok"')
        assert (await client.wait("hello", request_id, timeout=30)).result == "ok"
        other = await client.submit("hello", json={})
        assert (await client.cancel("hello", other)).status is Status.CANCELLED
        with pytest.raises(WaitTimeout):
            await client.wait("hello", await client.submit("hello", json={}), timeout=0.3)


def test_api_key_argument_and_environment(
    api_file: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"k-{time.time_ns()}"
    with gateway_process(
        api_file, queue_url=db_url, store_url=db_url, env={"CHUTE_API_KEYS": key}
    ) as running:
        with Client(running.url) as anonymous, pytest.raises(APIError) as info:
            anonymous.submit("hello", json={})
        assert (info.value.status_code, info.value.type) == (401, "unauthorized")
        with Client(running.url, api_key=key) as keyed:
            request_id = keyed.submit("hello", json={})
            assert keyed.get("hello", request_id).status is Status.IN_QUEUE
        monkeypatch.setenv("CHUTE_API_KEY", key)
        with Client(running.url) as from_env:
            assert from_env.cancel("hello", request_id).status is Status.CANCELLED
        done = chute_cli("submit", "hello", "--json", "{}", "--gateway", running.url)
        assert done.returncode == 5
        assert "401 unauthorized" in done.stderr
        done = chute_cli(
            "submit", "hello", "--json", "{}", "--gateway", running.url, env={"CHUTE_API_KEY": key}
        )
        assert done.returncode == 0, done.stderr


def test_cli_cancel_and_idempotency_key(gateway: GatewayProcess, db_url: str) -> None:
    key = f"cli-{time.time_ns()}"
    args = ("submit", "hello", "--json", "{}", "--idempotency-key", key, "--gateway", gateway.url)
    first = chute_cli(*args)
    assert first.returncode == 0, first.stderr
    again = chute_cli(*args)
    assert again.stdout == first.stdout
    request_id = first.stdout.strip()
    cancelled = chute_cli("cancel", "hello", request_id, "--gateway", gateway.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert msgspec.json.decode(cancelled.stdout)["status"] == "cancelled"
    finished = chute_cli("submit", "hello", "--json", "{}", "--gateway", gateway.url)
    finished_id = finished.stdout.strip()
    anyio.run(lambda: _finish(db_url, "hello", finished_id, Status.COMPLETED, result=b"1"))
    refused = chute_cli("cancel", "hello", finished_id, "--gateway", gateway.url)
    assert refused.returncode == 1
    assert "already completed" in refused.stderr
