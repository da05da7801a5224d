"""Issue 4: the Redis server crashes and restarts in the middle of 500 requests flowing through a
real gateway and dequeuer, and every request still completes.

The server is a private redis-server that fsyncs every write (``REDIS_DURABLE_ARGS``), so what
it acknowledged survives SIGKILL, as docs/redis.md recommends for production. While it is down
the gateway answers 503 (the client retries, as a client of a 503 should) and the dequeuer waits
and retries with backoff; neither process crashes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from e2e_support import API, PATIENCE, Processes, Stack, wait_finished

from chute.testing.services import REDIS, REDIS_DURABLE_ARGS, local_server

TOTAL = 500
CRASH_AFTER = 200


def submit_until_accepted(
    client: httpx.Client, url: str, payload: dict[str, int], refusals: list[int]
) -> str:
    """POST until the gateway answers 200: a 503 (or a dropped connection) means retry;
    each refusal is counted in ``refusals``."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        try:
            response = client.post(url, json=payload)
        except httpx.TransportError:
            refusals.append(payload["n"])
            time.sleep(0.05)
            continue
        if response.status_code == 200:
            request_id: str = response.json()["id"]
            return request_id
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "backend_unavailable"
        refusals.append(payload["n"])
        time.sleep(0.05)
    raise AssertionError(f"the gateway did not accept {payload} within {PATIENCE} s")


def test_a_redis_restart_mid_run_loses_no_request(tmp_path: Path, processes: Processes) -> None:
    with local_server(REDIS, tmp_path / "redis", extra_args=REDIS_DURABLE_ARGS) as server:
        url = f"{server.url}/0?prefix=restart"
        stack = Stack(processes, tmp_path, url)
        stack.start_container()
        gateway = stack.start_gateway()
        dequeuer, _ = stack.start_dequeuer("--workers", "8")

        crashed = threading.Event()

        def crash_and_restart() -> None:
            server.kill()
            # Down longer than the backend's reconnect budget (~2.5 s, which rides out a
            # quick restart unseen), so the gateway must answer 503 for a while.
            time.sleep(5.0)
            server.start()
            crashed.set()

        sent: dict[str, int] = {}
        refusals: list[int] = []
        with httpx.Client(timeout=30) as client:
            for n in range(TOTAL):
                if n == CRASH_AFTER:
                    threading.Thread(target=crash_and_restart, daemon=True).start()
                request_id = submit_until_accepted(
                    client, f"{stack.gateway_url}/{API}", {"n": n}, refusals
                )
                sent[request_id] = n
        assert crashed.wait(PATIENCE), "the Redis server was not restarted"
        # The outage really fell in the middle of the run: submits were refused, then taken.
        assert refusals, "no submit met the outage"
        assert min(refusals) >= CRASH_AFTER

        finals = wait_finished(stack.gateway_url, list(sent), "every request to finish")
        assert len(finals) == TOTAL
        for request_id, body in finals.items():
            assert body["status"] == "completed", body
            assert body["result"]["echo"] == {"n": sent[request_id]}
            assert body["result"]["request_id"] == request_id
        # Both rode the outage out instead of crashing.
        assert gateway.running()
        assert dequeuer.running()
