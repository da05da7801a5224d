"""Run a real ``chute gateway`` process for a test, on a free port.

::

    with gateway_process(api_file, queue=url, store=url) as gateway:
        httpx.post(f"{gateway.url}/hello", json={...})
    assert gateway.returncode == 0      # stopped with SIGTERM at the end of the block

The process is ``python -m chute gateway … --port 0``; its URL is read from the JSON log line
it writes once listening. Its stderr is drained in a thread (kept in ``gateway.log``) so the
process never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GatewayProcess:
    """A running gateway: its ``url``, the ``process`` and the log lines so far."""

    url: str
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)
    returncode: int | None = None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.returncode = self.process.wait(timeout)
        return self.returncode


def _drain(stream: object, lines: list[str], found: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            found.put(entry["url"])
    found.put(None)  # the process closed stderr: it exited


@contextlib.contextmanager
def gateway_process(
    api_file: str | os.PathLike[str],
    *,
    queue_url: str,
    store_url: str,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[GatewayProcess]:
    """Start ``chute gateway`` on a free port of 127.0.0.1, yield it, stop it with SIGTERM."""
    command = [
        sys.executable,
        "-m",
        "chute",
        "gateway",
        os.fspath(Path(api_file)),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--queue",
        queue_url,
        "--store",
        store_url,
        *args,
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CHUTE_LOG_FORMAT": "json", **(env or {})},
    )
    lines: list[str] = []
    found: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(process.stderr, lines, found), daemon=True).start()
    try:
        try:
            url = found.get(timeout=startup_timeout)
        except queue.Empty:
            url = None
        if url is None:
            process.kill()
            process.wait()
            raise RuntimeError(
                f"chute gateway did not start (exit {process.returncode}):\n" + "".join(lines)
            )
        gateway = GatewayProcess(url=url, process=process, log=lines)
        yield gateway
        gateway.stop()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
