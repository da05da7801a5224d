"""Issue 13, item 1: a submit's answer is the truth, even when the backend dies mid-write.

A flood of submits (32 in flight) runs through a real gateway, dequeuer and container while
the backend is killed several times:

* Redis (a private redis-server that fsyncs every write) is SIGKILLed and restarted 1.5 s later,
  with queue and store in one Redis database (the joint path: create and enqueue in one
  script) and in two databases (create, then enqueue);
* on SQLite, the gateway itself is SIGKILLed mid-flood and started again.

A client retries a 503 (as ``Retry-After`` asks) with the same body; every attempt carries its
token and attempt number, so whatever the container ran can be traced back to the attempt
that submitted it. The promise checked: every request the container ran was handed to its
client as an id, or its client got no answer at all (the connection died with the gateway);
never an attempt answered 503. Every id handed out completes (nothing accepted is lost), and no
token runs under two ids unless one of its attempts got no answer.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from e2e_support import API, PATIENCE, Processes, Stack, calls_by_request, eventually, sqlite_url

from chute.testing.http import http
from chute.testing.services import REDIS, REDIS_DURABLE_ARGS, local_server

#: Requests per run and how many are in flight at once.
TOTAL = 300
IN_FLIGHT = 32
#: After how many answered tokens each kill happens.
KILLS_AT = (50, 130, 210)
#: How long the killed Redis stays down: longer than its client's reconnect budget (one
#: retry: ``REDIS_OPTIONS``), so writes in flight fail instead of being retried unseen.
DOWN = 1.5
REDIS_OPTIONS = "prefix=truth&retries=1"
#: What a client waits before retrying a 503 (shorter than Retry-After: the test is bounded).
RETRY_PAUSE = 0.2


@dataclass
class Flood:
    """What the clients saw."""

    handed: dict[str, str] = field(default_factory=dict)  # token -> id answered with 200
    refused: set[tuple[str, int]] = field(default_factory=set)  # (token, attempt) answered 503
    unanswered: set[tuple[str, int]] = field(default_factory=set)  # the connection died
    answered: int = 0
    kills: int = 0


async def flood(url: str, kill: Callable[[], None], kills_at: tuple[int, ...] = KILLS_AT) -> Flood:
    """Submit TOTAL tokens, IN_FLIGHT at a time, retrying 503s and dropped connections with
    a new attempt, and call ``kill`` (in a thread) as the answers pass each of ``kills_at``."""
    seen = Flood()
    tokens = iter(f"t{n:04d}" for n in range(TOTAL))
    pending_kills = list(kills_at)
    killing = threading.Lock()

    def maybe_kill() -> None:
        if pending_kills and seen.answered >= pending_kills[0]:
            pending_kills.pop(0)
            seen.kills += 1

            def run() -> None:
                with killing:
                    kill()

            threading.Thread(target=run, daemon=True).start()

    async def client(http: httpx.AsyncClient) -> None:
        for token in tokens:
            deadline = time.monotonic() + PATIENCE
            attempt = 0
            while True:
                assert time.monotonic() < deadline, f"{token} was never accepted"
                attempt += 1
                try:
                    response = await http.post(
                        f"{url}/{API}", json={"token": token, "attempt": attempt}
                    )
                except httpx.TransportError:
                    seen.unanswered.add((token, attempt))
                    await anyio.sleep(RETRY_PAUSE)
                    continue
                if response.status_code == 503:
                    seen.refused.add((token, attempt))
                    await anyio.sleep(RETRY_PAUSE)
                    continue
                assert response.status_code == 200, response.text
                seen.handed[token] = response.json()["id"]
                break
            seen.answered += 1
            maybe_kill()

    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with (
        httpx.AsyncClient(timeout=PATIENCE, limits=limits) as http,
        anyio.create_task_group() as tg,
    ):
        for _ in range(IN_FLIGHT):
            tg.start_soon(client, http)
    with killing:  # the last kill's restart is over
        pass
    return seen


def check(stack: Stack, container_log: Callable[[], str], seen: Flood) -> dict[str, int]:
    """The promise, checked against what the container ran; returns the run's figures."""
    assert len(seen.handed) == TOTAL
    by_id = {request_id: token for token, request_id in seen.handed.items()}
    assert len(by_id) == TOTAL, "two tokens were handed the same id"

    # Nothing accepted is lost: every id handed out completes, with its own body.
    results: dict[str, dict[str, object]] = {}

    def all_done() -> bool:
        with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
            for request_id in by_id.keys() - results.keys():
                body = http.get(f"/{API}/{request_id}").json()
                if body["status"] in ("in_queue", "in_progress"):
                    return False
                results[request_id] = body
        return True

    eventually(all_done, "every accepted request to finish", timeout=PATIENCE * 2)
    lost = [i for i, body in results.items() if body["status"] != "completed"]
    assert not lost, [results[i] for i in lost]
    for request_id, body in results.items():
        echo = body["result"]["echo"]  # type: ignore[index]
        assert echo["token"] == by_id[request_id], body

    # Every request the container ran was handed to its client, or its client got no answer.
    ran = calls_by_request(container_log())
    assert set(by_id) <= set(ran)
    strays: dict[str, tuple[str, int]] = {}
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        for request_id in set(ran) - set(by_id):
            body = http.get(f"/{API}/{request_id}").json()
            echo = body.get("result", {}).get("echo")
            assert echo is not None, f"the container ran {request_id}, unknown to clients: {body}"
            strays[request_id] = (echo["token"], echo["attempt"])
    refused_but_ran = [attempt for attempt in strays.values() if attempt in seen.refused]
    assert not refused_but_ran, f"answered 503 and ran all the same: {refused_but_ran}"
    assert set(strays.values()) <= seen.unanswered
    # A token runs under two ids only if one attempt's answer was lost with the connection.
    unanswered_tokens = {token for token, _ in seen.unanswered}
    duplicates = [attempt for attempt in strays.values() if attempt[0] not in unanswered_tokens]
    assert not duplicates
    return {
        "requests": TOTAL,
        "kills": seen.kills,
        "503": len(seen.refused),
        "unanswered": len(seen.unanswered),
        "ran_unanswered": len(strays),
        "redeliveries": sum(len(calls) - 1 for calls in ran.values()),
        "duplicates": len(duplicates),
        "lost": len(lost),
    }


def settled(stack: Stack) -> dict[str, float]:
    text = http().get(f"{stack.gateway_url}/metrics", timeout=30).text
    found = re.findall(r'chute_gateway_submits_settled_total\{[^}]*outcome="(\w+)"\} (\S+)', text)
    return {outcome: float(value) for outcome, value in found}


@pytest.mark.parametrize("layout", ["one-database", "two-databases"])
def test_redis_killed_mid_flood_never_runs_a_refused_submit(
    tmp_path: Path, processes: Processes, layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with local_server(REDIS, tmp_path / "redis", extra_args=REDIS_DURABLE_ARGS) as server:
        queue = f"{server.url}/0?{REDIS_OPTIONS}"
        store = queue if layout == "one-database" else f"{server.url}/1?{REDIS_OPTIONS}"
        stack = Stack(processes, tmp_path, queue, store=store)
        container = stack.start_container()
        gateway = stack.start_gateway()
        # A short lease: deliveries whose ack died with the server come back soon.
        dequeuer, _ = stack.start_dequeuer("--workers", "8", "--lease", "3")

        def kill() -> None:
            server.kill()
            time.sleep(DOWN)
            server.start()

        seen = anyio.run(flood, stack.gateway_url, kill)
        figures = check(stack, container.output, seen)
        figures.update({f"settled_{k}": int(v) for k, v in settled(stack).items()})
        assert gateway.running()
        assert dequeuer.running()
    assert seen.kills == len(KILLS_AT)
    assert seen.refused, "no submit met an outage"
    assert not seen.unanswered  # the gateway never dropped a connection
    with capsys.disabled():
        print(f"\nsubmit truth, Redis {layout}: {figures}")


def test_sqlite_gateway_killed_mid_flood_never_runs_a_refused_submit(
    tmp_path: Path, processes: Processes, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(processes, tmp_path, sqlite_url(tmp_path))
    container = stack.start_container()
    gateways = [stack.start_gateway()]
    dequeuer, _ = stack.start_dequeuer("--workers", "8")

    def kill() -> None:
        import signal

        gateways[-1].signal(signal.SIGKILL)
        gateways[-1].wait()
        gateways.append(stack.start_gateway())

    seen = anyio.run(flood, stack.gateway_url, kill)
    figures = check(stack, container.output, seen)
    assert seen.kills == len(KILLS_AT)
    assert seen.unanswered, "no submit was in flight when the gateway was killed"
    assert dequeuer.running()
    with capsys.disabled():
        print(f"\nsubmit truth, SQLite gateway kills: {figures}")


def test_past_the_settle_timeout_an_id_is_answered_and_never_reads_404(
    tmp_path: Path, processes: Processes, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a settle timeout far shorter than the outage, the submits caught mid-write cannot
    be settled in time: they are answered with their id, and settled in the background once
    Redis is back. Each such id then reads as completed (a dequeuer took it) or as cancelled
    with error ``submit_unconfirmed`` (it never ran), never 404 and never run unseen."""
    with local_server(REDIS, tmp_path / "redis", extra_args=REDIS_DURABLE_ARGS) as server:
        url = f"{server.url}/0?{REDIS_OPTIONS}"
        stack = Stack(processes, tmp_path, url, settle_timeout="0.05")
        container = stack.start_container()
        stack.start_gateway()
        stack.start_dequeuer("--workers", "8")

        def kill() -> None:
            server.kill()
            time.sleep(DOWN)
            server.start()

        seen = anyio.run(flood, stack.gateway_url, kill, (80,))
        by_id = {request_id: token for token, request_id in seen.handed.items()}
        finals: dict[str, dict[str, object]] = {}

        def all_final() -> bool:
            with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
                for request_id in by_id.keys() - finals.keys():
                    response = http.get(f"/{API}/{request_id}")
                    assert response.status_code == 200, response.text  # never 404
                    body = response.json()
                    if body["status"] not in ("in_queue", "in_progress"):
                        finals[request_id] = body
            return len(finals) == len(by_id)

        eventually(all_final, "every id to reach a final status", timeout=PATIENCE * 2)
        unconfirmed = {i for i, b in finals.items() if b["status"] == "cancelled"}
        for request_id in unconfirmed:
            assert finals[request_id]["error"]["type"] == "submit_unconfirmed"  # type: ignore[index]
        assert all(b["status"] == "completed" for i, b in finals.items() if i not in unconfirmed)
        ran = calls_by_request(container.output())
        assert not unconfirmed & set(ran)  # cancelled ones never ran
        assert set(ran) <= set(by_id)  # and nothing ran that no client was told about
        figures = {
            "requests": TOTAL,
            "kills": seen.kills,
            "503": len(seen.refused),
            "ids_unconfirmed_then_cancelled": len(unconfirmed),
            **{f"settled_{k}": int(v) for k, v in settled(stack).items()},
        }
    with capsys.disabled():
        print(f"\nsubmit truth past the settle timeout, Redis: {figures}")
