"""Long-poll at scale: hundreds of ``?wait=`` GETs cost the store one read per watched id per
poll interval, not one per waiter. The gateway runs in-process under hypercorn (so the test
can count the reads its own store object makes) on a real SQLite file and on Redis."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from gateway_support import HELLO_API, backend_url, serving

from chute import open_store
from chute.backends.base import Store
from chute.config import API, loads_apis
from chute.gateway import Gateway
from chute.protocol import RequestRecord, Status

APIS = loads_apis(HELLO_API)


class CountingStore(Store):
    """The gateway's store, counting the reads it makes per request id (our own calls)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reads: collections.Counter[str] = collections.Counter()

    async def create(self, record: RequestRecord, body: AsyncIterable[bytes]) -> RequestRecord:
        return await self.inner.create(record, body)

    async def read(self, api: str, request_id: str) -> tuple[RequestRecord, object] | None:
        self.reads[request_id] += 1
        return await self.inner.read(api, request_id)

    async def write_if(
        self, record: RequestRecord, version: object, *, result: bytes | None = None
    ) -> bool:
        return await self.inner.write_if(record, version, result=result)

    def payload(self, api: str, request_id: str) -> AsyncIterator[bytes]:
        return self.inner.payload(api, request_id)

    async def result(self, api: str, request_id: str) -> bytes | None:
        self.reads[request_id] += 1
        return await self.inner.result(api, request_id)

    async def delete(self, api: str, request_id: str) -> bool:
        return await self.inner.delete(api, request_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request, tmp_path, "lp")


@asynccontextmanager
async def running(apis: list[API], url: str) -> AsyncIterator[tuple[Gateway, CountingStore, str]]:
    app = Gateway(apis, queue_url=url, store_url=url)
    store = CountingStore(open_store(url))
    app.store = store  # the gateway uses this object; it opens only what is missing
    async with serving(app) as url:
        yield app, store, url


async def until(check: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Wait for the gateway's own state to say ``what`` (there is no event to wait on)."""
    with anyio.fail_after(limit):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def finish(url: str, request_id: str) -> None:
    """The dequeuer's part, through a store object of its own (not counted)."""
    async with open_store(url) as store:
        await store.transition("hello", request_id, Status.IN_PROGRESS, attempt=1)
        await store.transition(
            "hello", request_id, Status.COMPLETED, attempt=1, result=b'{"ok":true}'
        )


@pytest.mark.anyio
@pytest.mark.parametrize(("ids", "per_id"), [(1, 300), (5, 60)])
async def test_waiters_share_one_watch_per_id(backend: str, ids: int, per_id: int) -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with (
        running(APIS, backend) as (app, store, url),
        httpx.AsyncClient(base_url=url, timeout=90, limits=limits) as http,
    ):
        request_ids = [(await http.post("/hello", json={})).json()["id"] for _ in range(ids)]
        answers: list[dict[str, object]] = []

        async def wait(request_id: str) -> None:
            response = await http.get(f"/hello/{request_id}", params={"wait": 30})
            assert response.status_code == 200, response.text
            answers.append(response.json())

        async with anyio.create_task_group() as tg:
            for request_id in request_ids:
                for _ in range(per_id):
                    tg.start_soon(wait, request_id)
            await until(lambda: app.watcher.waiters == ids * per_id, "every waiter to wait")
            assert app.watcher.watched == ids
            # Counted from here: how long the waiters took to arrive depends on the machine's
            # load, not on the sharing under test.
            store.reads.clear()
            await anyio.sleep(1.0)  # the watches poll meanwhile, backing off
            for request_id in request_ids:
                await finish(backend, request_id)

        assert len(answers) == ids * per_id
        assert all(a["status"] == "completed" and a["result"] == {"ok": True} for a in answers)
        # Reads per id (polls, plus one result read) do not grow with the waiters: a few
        # dozen at most over the ~1 s, where per-waiter polling would cost per_id or more.
        for request_id in request_ids:
            assert 1 <= store.reads[request_id] <= 30 < per_id, store.reads
        assert app.watcher.watched == 0  # every watch ended with its request


@pytest.mark.anyio
async def test_a_watch_ends_when_its_last_waiter_leaves(backend: str) -> None:
    async with running(APIS, backend) as (app, store, url):
        async with httpx.AsyncClient(base_url=url, timeout=90) as http:
            request_id = (await http.post("/hello", json={})).json()["id"]
            with anyio.move_on_after(0.5):  # the client gives up: its connection closes
                await http.get(f"/hello/{request_id}", params={"wait": 60})
        await until(lambda: app.watcher.watched == 0, "the watch to end")
        settled = store.reads[request_id]
        await anyio.sleep(1.0)
        assert store.reads[request_id] == settled  # nobody polls for nobody
