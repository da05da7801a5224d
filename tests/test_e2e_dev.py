"""``chute dev`` on the hello-world example, as a user runs it: real gateway, dequeuer and
container processes, requests through HTTP, results from the backend."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from e2e_support import (
    API,
    EXAMPLE,
    PATIENCE,
    ChuteDev,
    Processes,
    backend_url,
    start_chute_dev,
)

#: On one xdist worker (--dist=loadgroup): one chute dev per backend for every test.
pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("test_e2e_dev")]


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def dev(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChuteDev]:
    """One ``chute dev`` of the example per backend, shared by this module's tests."""
    directory = tmp_path_factory.mktemp(f"dev-{request.param}")
    url = backend_url(request.param, directory, request)
    processes = Processes(directory)
    extra = [] if request.param == "sqlite" else ["--queue", url, "--store", url]
    try:
        chute_dev = start_chute_dev(processes, EXAMPLE, directory / "state", *extra)
        chute_dev.wait_ready()
        yield chute_dev
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop_all()


async def wait_done(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    """Poll ``GET /<api>/<id>`` until the request is no longer queued or running."""
    with anyio.fail_after(PATIENCE):
        while True:
            response = await client.get(f"/{API}/{request_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] not in ("in_queue", "in_progress"):
                return body
            await anyio.sleep(0.05)


async def test_200_concurrent_requests_all_complete_with_their_own_result(dev: ChuteDev) -> None:
    n = 200
    payloads = [{"text": f"request {i}", "token": secrets.token_hex(8)} for i in range(n)]
    ids: list[str] = [""] * n
    results: list[dict[str, Any]] = [{}] * n
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=dev.url, timeout=30, limits=limits) as client:

        async def one(i: int) -> None:
            response = await client.post(f"/{API}", json=payloads[i])
            assert response.status_code == 200, response.text
            ids[i] = response.json()["id"]
            results[i] = await wait_done(client, ids[i])

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)

    assert len(set(ids)) == n
    for i, body in enumerate(results):
        assert body["id"] == ids[i]
        assert body["status"] == "completed", body
        assert "timestamp" in body
        result = body["result"]
        assert result["echo"] == payloads[i]
        assert result["message"] == f"hello, request {i}!"
        assert result["request_id"] == ids[i]
        assert result["content_type"] == "application/json"


async def test_unknown_id_and_unknown_api_are_404(dev: ChuteDev) -> None:
    async with httpx.AsyncClient(base_url=dev.url, timeout=30) as client:
        unknown_id = await client.get(f"/{API}/{secrets.token_hex(12)}")
        unknown_api = await client.post("/no-such-api", json={"text": "hi"})
        unknown_api_get = await client.get(f"/no-such-api/{secrets.token_hex(12)}")
    for response in (unknown_id, unknown_api, unknown_api_get):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["type"]
        assert error["message"]


async def test_a_failing_container_answer_fails_the_request_with_its_reason(dev: ChuteDev) -> None:
    async with httpx.AsyncClient(base_url=dev.url, timeout=30) as client:
        response = await client.post(f"/{API}", json={"fail": True})
        assert response.status_code == 200
        body = await wait_done(client, response.json()["id"])
    assert body["status"] == "failed", body
    assert "result" not in body
    error = body["error"]
    assert error["status_code"] == 500
    assert "failing on purpose" in error.get("body", "") + error["message"]


async def test_any_json_body_reaches_the_container_as_sent(dev: ChuteDev) -> None:
    async with httpx.AsyncClient(base_url=dev.url, timeout=30) as client:
        response = await client.post(
            f"/{API}", content=b'"a JSON string"', headers={"Content-Type": "application/json"}
        )
        body = await wait_done(client, response.json()["id"])
    assert body["status"] == "completed", body
    assert body["result"]["echo"] == "a JSON string"
    assert body["result"]["message"] == "hello, world!"
