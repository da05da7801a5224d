"""Retries, the dead letter and "what happened" through real processes: a gateway, a dequeuer
and the example container, on SQLite and Redis; ``chute dead-letter`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from e2e_support import API, PY, Processes, Stack, backend_url, eventually, request_status

from chute.testing.http import http

RETRIES = """  retries:
    max_attempts: 3
    initial_backoff: 100ms
    retry_on: ["500", connection]
"""


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return backend_url(request.param, tmp_path, request)


def chute(*args: str, code: int = 0) -> str:
    done = subprocess.run([PY, "-m", "chute", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr + done.stdout
    return done.stdout


def test_failed_after_retries_shows_why_and_lands_in_the_dead_letter(
    tmp_path: Path, processes: Processes, backend: str
) -> None:
    stack = Stack(processes, tmp_path, backend)
    with stack.api_file.open("a") as api_file:
        api_file.write(RETRIES)
    stack.start_container()
    stack.start_gateway()
    stack.start_dequeuer()

    failing = http().post(f"{stack.gateway_url}/{API}", json={"fail": True}, timeout=30)
    fine = http().post(f"{stack.gateway_url}/{API}", json={"hello": 1}, timeout=30)
    failing_id, fine_id = failing.json()["id"], fine.json()["id"]

    body = eventually(
        lambda: (b := request_status(stack.gateway_url, failing_id))["status"] == "failed" and b,
        "the failing request to fail",
    )
    assert body["attempts"] == 3
    assert body["error"]["type"] == "container_status"
    assert body["error"]["status_code"] == 500
    assert body["error"]["body"]  # the start of the container's answer
    for key in ("created_at", "started_at", "finished_at"):
        assert body[key].endswith("Z")
    assert body["created_at"] <= body["started_at"] <= body["finished_at"]
    assert "result" not in body

    done = eventually(
        lambda: (b := request_status(stack.gateway_url, fine_id))["status"] == "completed" and b,
        "the fine request to complete",
    )
    assert done["attempts"] == 1
    assert done["timestamp"] == done["finished_at"]
    assert "error" not in done

    def dead() -> list[dict[str, object]]:
        out = chute("dead-letter", "list", API, "--queue", backend, "--json")
        return [json.loads(line) for line in out.splitlines()]

    [letter] = eventually(dead, "the dead letter")
    assert (letter["request_id"], letter["attempts"]) == (failing_id, 3)
    assert "purged 1 dead letter" in chute("dead-letter", "purge", API, "--queue", backend, "--yes")
    assert dead() == []
    assert request_status(stack.gateway_url, failing_id)["status"] == "failed"
