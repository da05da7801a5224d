"""The real things the dequeuer's tests drive: a user container process, a dequeuer process,
and the test's own handle on the SQLite queue and store (what the gateway would write)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx

import chute
from chute.backends.base import DEFAULT_RETENTION, Queue, Store
from chute.protocol import RequestRecord, Status, new_request_id, now
from chute.testing import free_port, http

HERE = Path(__file__).parent
API = "echo"


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class Container:
    """The test user container: uvicorn serving :mod:`chute.testing.echo`, which the
    benchmarks call too (its ``X-Behaviour`` header picks a failure or a delay)."""

    def __init__(self, ready_file: Path | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "ECHO_RECORD_CALLS": "1"}
        if ready_file is not None:
            env["READY_FILE"] = str(ready_file)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "chute.testing.echo:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--timeout-graceful-shutdown",  # slow test jobs may still be running
                "1",
            ],
            env=env,
        )
        wait_for_port(self.port, self.proc)

    def calls(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """The calls the container saw (for one request id, or all)."""
        response = http().get(f"http://127.0.0.1:{self.port}/calls", timeout=5)
        calls: list[dict[str, Any]] = response.json()
        return [c for c in calls if request_id is None or c["id"] == request_id]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_api_file(
    path: Path,
    port: int,
    *,
    max_concurrency: int = 1,
    failure_threshold: int = 1,
    extra: str = "",
) -> Path:
    """The test API; ``extra`` is YAML added at the API's top level (indented two spaces),
    e.g. ``retries:`` or ``webhook:``."""
    path.write_text(
        f"""
- name: {API}
  kind: AsyncAPI
  pod:
    port: {port}
    max_concurrency: {max_concurrency}
    containers:
      - name: app
        image: example.com/echo:1
        readiness_probe:
          http_get:
            path: /healthz
            port: {port}
          period_seconds: 1
          failure_threshold: {failure_threshold}
{extra}"""
    )
    return path


class Dequeuer:
    """``python -m chute_dequeuer`` as a real process; its JSON log lines are collected."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "CHUTE_LOG_FORMAT": "json", "CHUTE_LOG_LEVEL": "INFO"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chute_dequeuer", *args],
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.admin_port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.raw.append(text)
            with contextlib.suppress(ValueError):  # uvicorn or a traceback, not ours
                self.lines.append(json.loads(text))

    def wait_log(self, message: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        """The first log line whose message starts with ``message`` and has ``fields``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.lines):
                if str(entry.get("message", "")).startswith(message) and all(
                    entry.get(k) == v for k, v in fields.items()
                ):
                    return entry
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no log line {message!r} {fields}; got:\n" + "\n".join(self.raw))

    def started(self) -> Dequeuer:
        """Wait until it runs (signal handlers installed); remember the admin port."""
        # Patient: start-up is imports and connections, slow on a loaded machine; what the
        # tests time is what comes after.
        self.admin_port = int(self.wait_log("dequeuer started", timeout=60.0)["admin_port"])
        return self

    def admin(self, path: str) -> httpx.Response:
        return http().get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Backend:
    """The test's own handle on the SQLite queue and store (what the gateway would write)."""

    def __init__(self, url: str) -> None:
        self.queue: Queue = chute.open_queue(url)
        self.store: Store = chute.open_store(url)

    async def create(
        self,
        body: bytes = b'{"hello": "world"}',
        *,
        content_type: str | None = "application/json",
        headers: list[tuple[str, str]] | None = None,
        request_id: str | None = None,
        age: float = 0.0,
        **fields: Any,
    ) -> str:
        """Store a record and its payload (in two chunks), as the gateway does; ``fields``
        set more of the record (``queue_deadline``, ``timeout``, ``extra``). ``age``: the
        seconds it has waited already (``created_at`` that long ago), so that a test of the
        API's queue deadline need not wait it out."""
        t = now() - age
        record = RequestRecord(
            id=request_id or new_request_id(),
            api=API,
            status=Status.IN_QUEUE,
            created_at=t,
            expires_at=t + DEFAULT_RETENTION,
            content_type=content_type,
            headers=[("User-Agent", "test-client"), *(headers or [])],
            **fields,
        )

        async def chunks() -> AsyncIterator[bytes]:
            half = len(body) // 2
            yield body[:half]
            yield body[half:]

        await self.store.create(record, chunks())
        return record.id

    async def submit(self, body: bytes = b'{"hello": "world"}', **kwargs: Any) -> str:
        request_id = await self.create(body, **kwargs)
        await self.queue.send(API, request_id)
        return request_id

    async def record(self, request_id: str) -> RequestRecord:
        record = await self.store.get(API, request_id)
        assert record is not None, f"record {request_id} is gone"
        return record

    async def wait_status(
        self, request_id: str, *statuses: Status, within: float = 20.0
    ) -> RequestRecord:
        with anyio.fail_after(within):
            while True:
                record = await self.record(request_id)
                if record.status in statuses:
                    return record
                await anyio.sleep(0.05)

    async def aclose(self) -> None:
        await self.queue.aclose()
        await self.store.aclose()


def rss_peak_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")
