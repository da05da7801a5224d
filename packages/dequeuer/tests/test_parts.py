"""The dequeuer's parts on their own, each against real things: the command line, probe
selection, the container client against real sockets, the metrics exposition, and a backend
outage the dequeuer rides out."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from dequeuer_harness import API, Backend, Container, Dequeuer, write_api_file
from prometheus_client.parser import text_string_to_metric_families

from chute.config import find_api, load_apis
from chute.protocol import RequestRecord, Status, now
from chute.testing import free_port
from chute_dequeuer.container import ContainerClient, forwarded_headers, is_json_media_type
from chute_dequeuer.metrics import Metrics
from chute_dequeuer.probes import probes_for

pytestmark = pytest.mark.anyio


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chute_dequeuer", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unknown_api_is_a_clear_error(tmp_path: Path) -> None:
    api_file = write_api_file(tmp_path / "api.yaml", 8080)
    done = run_cli("--api-file", str(api_file), "--api", "nope")
    assert done.returncode == 1
    (line,) = [json.loads(x) for x in done.stderr.splitlines()]
    assert line["level"] == "error"
    assert "no API named 'nope'" in line["message"]
    assert "echo" in line["message"]


def test_bad_flags_are_clear_errors(tmp_path: Path) -> None:
    api_file = write_api_file(tmp_path / "api.yaml", 8080)
    done = run_cli("--api-file", str(api_file), "--api", API, "--workers", "0")
    assert done.returncode == 1
    assert "workers must be at least 1" in done.stderr
    done = run_cli("--api-file", str(tmp_path / "missing.yaml"), "--api", API)
    assert done.returncode == 1
    assert "missing.yaml" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_cli(
            "--api-file",
            str(api_file),
            "--api",
            API,
            "--admin-host",
            "127.0.0.1",
            "--admin-port",
            port,
            "--queue",
            f"sqlite:///{tmp_path / 'db.db'}",
        )
    assert done.returncode == 1
    assert "address already in use" in done.stderr
    done = run_cli("--api", API)
    assert done.returncode == 2  # argparse: --api-file is required
    assert "--api-file" in done.stderr


def test_default_tcp_probe_is_added_unless_one_targets_the_user_port(tmp_path: Path) -> None:
    api = find_api(load_apis(write_api_file(tmp_path / "api.yaml", 9000)), API)
    specs = probes_for(api, 9000)
    assert [(s.name, s.port, s.path) for s in specs] == [
        ("app", 9000, "/healthz"),  # an HTTP probe on the user port does not count
        ("default:tcp", 9000, None),
    ]
    assert (specs[0].period, specs[0].failure_threshold) == (1.0, 1)
    assert specs[1].period < 1  # fast, so a fresh container gets work at once

    (tmp_path / "tcp.yaml").write_text(
        """
- name: tcp
  kind: AsyncAPI
  pod:
    port: 9000
    containers:
      - name: app
        image: example.com/app:1
        readiness_probe:
          tcp_socket: {port: 9000}
          initial_delay_seconds: 2
      - name: side
        image: example.com/side:1
"""
    )
    api = find_api(load_apis(tmp_path / "tcp.yaml"), "tcp")
    specs = probes_for(api, 9000)
    assert [(s.name, s.port, s.path, s.initial_delay) for s in specs] == [("app", 9000, None, 2.0)]
    # Overriding the user port on the command line moves the default probe with it.
    assert [s.name for s in probes_for(api, 9001)] == ["app", "default:tcp"]


def test_content_type_rule() -> None:
    assert is_json_media_type("application/json")
    assert is_json_media_type("Application/JSON; charset=utf-8")
    assert not is_json_media_type("application/json-seq")
    assert not is_json_media_type("text/plain")
    assert not is_json_media_type("")


def record(request_id: str, **fields: object) -> RequestRecord:
    t = now()
    return RequestRecord(
        id=request_id,
        api=API,
        status=Status.IN_PROGRESS,
        created_at=t,
        expires_at=t + 60,
        **fields,  # type: ignore[arg-type]
    )


def test_forwarded_headers_drop_hop_by_hop_and_spoofed_ids() -> None:
    headers = forwarded_headers(
        record(
            "abc",
            content_type="text/csv",
            headers=[
                ("Connection", "keep-alive"),
                ("Transfer-Encoding", "chunked"),
                ("Host", "gateway"),
                ("X-Cortex-Request-ID", "spoofed"),
                ("Accept-Encoding", "br"),
                ("X-Trace", "1"),
            ],
        ),
        12,
    )
    assert sorted(headers.items()) == [
        ("Content-Length", "12"),
        ("Content-Type", "text/csv"),
        ("X-Cortex-Request-ID", "abc"),
        ("X-Trace", "1"),
    ]


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_connection_refused_is_a_connection_failure() -> None:
    port = free_port()  # nothing listens there
    async with ContainerClient(port, max_connections=1) as client:
        result = await client.call(record("refused", payload_size=2), one_chunk(b"{}"))
    assert result.result is None
    assert result.status_code is None
    assert result.error is not None
    assert result.error.type == "connection"
    assert "not reachable" in result.error.message
    assert str(port) in result.error.message


async def test_the_payload_reader_is_closed_when_the_container_refuses() -> None:
    """The store's payload stream (an open file or HTTP response) must be released even when
    the body was never sent, or every retry against a flapping container leaks one."""
    closed: list[bool] = []

    async def payload() -> AsyncIterator[bytes]:
        try:
            yield b"{"
            yield b"}"
        finally:
            closed.append(True)

    async with ContainerClient(free_port(), max_connections=1) as client:
        result = await client.call(record("refused", payload_size=2), payload())
    assert result.error is not None
    assert result.error.type == "connection"
    assert closed == [True]


async def test_oversized_answers_fail(container: Container) -> None:
    body = b'{"x": "' + b"a" * 5000 + b'"}'
    async with ContainerClient(container.port, max_connections=1, max_result_size=4096) as c:
        big = await c.call(record("big", payload_size=len(body)), one_chunk(body))
        small = await c.call(record("small", payload_size=2), one_chunk(b"{}"))
    assert big.error is not None
    assert big.error.type == "result_too_large"
    assert small.error is None
    assert small.result is not None
    assert json.loads(small.result)["body"] == "{}"


def test_metrics_exposition_parses_and_keeps_cortex_names() -> None:
    metrics = Metrics()
    metrics.observe_call(200, 0.2)
    metrics.observe_call(200, 4000.0)
    metrics.observe_call(500, 0.01)
    metrics.failures.labels(reason="container_status").inc()
    text = metrics.render().decode()

    assert "# TYPE cortex_async_request_count counter" in text
    assert 'cortex_async_request_count{status_code="200"} 2' in text
    assert 'cortex_async_latency_bucket{le="7200.0",status_code="200"} 2.0' in text
    assert 'cortex_async_latency_bucket{le="1800.0",status_code="200"} 1.0' in text
    assert "_created" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["cortex_async_latency"].type == "histogram"
    assert families["chute_dequeuer_failures"].type == "counter"
    for name in ("chute_dequeuer_in_flight", "chute_dequeuer_lease_extensions"):
        assert name in families


async def test_a_backend_outage_is_ridden_out(
    tmp_path: Path,
    container: Container,
    start_dequeuer: Callable[..., Dequeuer],
) -> None:
    # The database's directory cannot be created while a plain file has its name: every
    # queue call fails with BackendUnavailable until the file is replaced by the directory.
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker / 'chute.db'}"
    dequeuer = start_dequeuer(container.port, "--queue", url, "--store", url)
    dequeuer.wait_log("backend unavailable")

    blocker.unlink()
    backend = Backend(url)
    try:
        rid = await backend.submit()
        done = await backend.wait_status(rid, Status.COMPLETED, within=20)
        assert done.attempt == 1
    finally:
        await backend.aclose()
    dequeuer.wait_log("backend available again")
    assert [x["message"] for x in dequeuer.lines].count(
        "backend unavailable, retrying with backoff up to 5 s"
    ) == 1
    assert dequeuer.proc.poll() is None
