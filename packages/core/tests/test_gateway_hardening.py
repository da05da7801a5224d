"""Issue 13, items 2, 3, 5 and 7, against a real ``chute gateway`` process on every ASGI server
it supports: slow bodies time out (408) and give their connections and memory back, oversized
header sets are refused at submit (431), non-ASCII API keys are refused at start-up, and
absolute-form request targets are served."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_support import queued

from chute.config import load_apis
from chute.errors import ConfigError
from chute.gateway import Gateway
from chute.gateway._auth import global_keys
from chute.testing.gateway import GatewayProcess, gateway_process
from chute.testing.http import http

SERVERS = ["hypercorn", "uvicorn", "granian"]
#: Slow clients in the attack, and how long the gateway lets a body pause / take in all.
SLOW_CLIENTS = 200
IDLE = 1.0
TOTAL = 3.0


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (the bench dependency group has it)")
    return name


@pytest.fixture
def gateway(api_file: Path, sqlite_url: str, server: str) -> Iterator[GatewayProcess]:
    args = ["--server", server, "--body-idle-timeout", str(IDLE), "--body-timeout", str(TOTAL)]
    with gateway_process(api_file, queue_url=sqlite_url, store_url=sqlite_url, args=args) as gw:
        # granian binds its own socket after the gateway announces its URL: wait for it.
        deadline = time.monotonic() + 30
        while True:
            try:
                http().get(f"{gw.url}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway never answered"
                time.sleep(0.1)
        yield gw


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def slow_client(url: str, trickle: bool) -> bytes:
    """Send a submit's headers and one byte of its 100,000-byte body, then either nothing
    (the idle timeout's case) or a byte every half second (the total timeout's); return all
    the gateway answered before it closed the connection."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    head = b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"
    writer.write(head)
    answer = b""

    async def drip() -> None:
        while trickle:
            await asyncio.sleep(0.5)
            writer.write(b" ")
            await writer.drain()

    dripping = asyncio.ensure_future(drip())
    try:
        async with asyncio.timeout(TOTAL + 20):
            while chunk := await reader.read(65536):
                answer += chunk
    except (ConnectionError, TimeoutError):
        pass
    finally:
        dripping.cancel()
        writer.close()
    return answer


def test_slow_bodies_time_out_and_give_back_connections_and_memory(
    gateway: GatewayProcess, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two waves of slow clients: each is answered 408 and closed by the gateway; after each,
    the descriptors are back to the baseline, and the second wave leaves the memory where the
    first left it (what a wave holds for good would add up wave after wave)."""
    pid = gateway.process.pid
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        assert http.post("/hello", json={"warm": 1}).status_code == 200  # opens the backends
    time.sleep(0.5)
    fds, memory = descriptors(pid), rss(pid)
    before = queued(sqlite_url, "hello")

    async def attack() -> list[bytes]:
        return await asyncio.gather(
            *(slow_client(gateway.url, trickle=n % 2 == 1) for n in range(SLOW_CLIENTS))
        )

    def wave() -> float:
        started = time.monotonic()
        answers = asyncio.run(attack())
        took = time.monotonic() - started
        statuses = [a.split(b"\r\n", 1)[0] for a in answers]
        assert all(s.startswith(b"HTTP/1.1 408") for s in statuses), set(statuses)
        assert all(b"request_timeout" in a for a in answers)
        assert took < TOTAL + 20  # every connection was closed by the gateway, not the client
        assert queued(sqlite_url, "hello") == before  # nothing of them was queued
        deadline = time.monotonic() + 10
        while descriptors(pid) > fds + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert descriptors(pid) <= fds + 2, (fds, descriptors(pid))
        return took

    took = wave()
    after_first = rss(pid)
    assert after_first <= memory + 16 * 2**20, (memory, after_first)
    wave()
    after_second = rss(pid)
    assert after_second <= after_first + 4 * 2**20, (after_first, after_second)
    with httpx.Client(base_url=gateway.url, timeout=30) as http:  # and it still serves
        assert http.post("/hello", json={"after": 1}).status_code == 200
    with capsys.disabled():
        mib = 2**20
        print(
            f"\n2 x {SLOW_CLIENTS} slow bodies: all 408 (first wave in {took:.1f} s); "
            f"descriptors {fds} -> {descriptors(pid)}; RSS {memory / mib:.1f} -> "
            f"{after_first / mib:.1f} -> {after_second / mib:.1f} MiB"
        )


def test_oversized_headers_are_refused_at_submit(gateway: GatewayProcess, sqlite_url: str) -> None:
    before = queued(sqlite_url, "hello")
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        big = {"X-Trace": "t" * 9000}
        response = http.post("/hello", json={}, headers=big)
        assert response.status_code == 431, response.text
        assert response.json()["error"]["type"] == "request_header_fields_too_large"
        assert queued(sqlite_url, "hello") == before
        # Under the limit, the same header is kept and queued.
        assert http.post("/hello", json={}, headers={"X-Trace": "t" * 7000}).status_code == 200
        assert queued(sqlite_url, "hello") == before + 1


def test_absolute_form_targets_are_served(gateway: GatewayProcess) -> None:
    async def raw(target: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        writer.write(
            b"GET " + target + b" HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n"
        )
        answer = await reader.read()
        writer.close()
        return answer

    async def both() -> tuple[bytes, bytes]:
        health = await raw(gateway.url.encode() + b"/healthz")
        missing = await raw(b"http://example.org/hello/0123456789abcdef?wait=0.1")
        return health, missing

    health, missing = asyncio.run(both())
    assert health.startswith(b"HTTP/1.1 200"), health
    assert missing.startswith(b"HTTP/1.1 404"), missing
    assert b"request 0123456789abcdef of API hello not found" in missing


def test_a_larger_header_limit_is_a_flag(api_file: Path, sqlite_url: str) -> None:
    args = ["--max-header-size", "32KiB"]
    with (
        gateway_process(api_file, queue_url=sqlite_url, store_url=sqlite_url, args=args) as gw,
        httpx.Client(base_url=gw.url, timeout=30) as http,
    ):
        assert http.post("/hello", json={}, headers={"X-Trace": "t" * 20000}).status_code == 200


@pytest.mark.parametrize("key", ["clé-secrète", "ключ", "key\u00a0x"])
def test_a_non_ascii_api_key_is_refused_at_startup(
    api_file: Path, sqlite_url: str, tmp_path: Path, key: str
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"good-key\n{key}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="non-ASCII"):
        global_keys(keys)
    done = subprocess.run(
        [sys.executable, "-m", "chute", "gateway", str(api_file), "--port", "0"]
        + ["--queue", sqlite_url, "--store", sqlite_url, "--api-keys-file", str(keys)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "non-ASCII" in done.stderr
    assert key not in done.stderr  # never the key itself


def test_the_limits_must_be_positive(api_file: Path, sqlite_url: str) -> None:
    apis = load_apis(api_file)
    for bad in ({"max_header_size": 0}, {"body_idle_timeout": 0}, {"body_timeout": -1}):
        with pytest.raises(ValueError, match="above 0"):
            Gateway(apis, queue_url=sqlite_url, store_url=sqlite_url, **bad)  # type: ignore[arg-type]
