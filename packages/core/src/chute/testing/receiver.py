"""A real HTTP server that receives webhooks, for tests (a user's or chute's own).

It runs in a thread of the test process on 127.0.0.1, records every delivery (headers, body,
arrival time) and answers according to a plan the test sets: a list of status codes for the
next deliveries (then 204), and an optional delay before answering.

    with WebhookReceiver() as receiver:
        receiver.plan = [500, 500]          # the first two deliveries fail
        ... receiver.url ...
        [delivery] = receiver.wait(1)
"""

from __future__ import annotations

import http.server
import threading
import time
from typing import Self

import msgspec

from chute.closing import Closing


class Received(msgspec.Struct, frozen=True):
    """One delivery as the receiver saw it."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # epoch seconds of arrival
    answered: int  # the status code it got


class WebhookReceiver(Closing):
    """A threaded HTTP server on a free port of 127.0.0.1 that records POSTs."""

    def __init__(self) -> None:
        self.plan: list[int] = []  # status codes for the next deliveries; 204 afterwards
        self.delay = 0.0  # seconds to wait before answering
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                at = time.time()
                with receiver._lock:
                    status = receiver.plan.pop(0) if receiver.plan else 204
                    delay = receiver.delay
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body, at, status))

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def deliveries(self, *, answered: int | None = None) -> list[Received]:
        with self._lock:
            found = list(self.received)
        return [r for r in found if answered is None or r.answered == answered]

    def wait(self, count: int, *, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` deliveries, once they have been answered; AssertionError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.deliveries()
            if len(found) >= count:
                return found[:count]
            time.sleep(0.02)
        raise AssertionError(f"expected {count} webhook deliveries, got {self.deliveries()}")

    def __enter__(self) -> Self:
        return self.start()

    def close(self) -> None:
        """Stop (``with`` does it at the end)."""
        self.stop()
