"""The systems under test, each driven through the same scenarios.

* :class:`Direct`: the container called directly by an asyncio client (the ceiling);
* :class:`Chute`: gateway + dequeuer on one backend, the gateway on one ASGI server;
* :class:`CeleryRedis`: Celery 5, Redis broker and result backend, prefork pool of 8.

Submit→result is measured to the moment the result is stored (chute: the record's
``finished_at``; Celery: the result's ``date_done``; direct: the answer received), so that no
system is billed for how often the harness looks. All clocks are this machine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.backends import Urls
from benchmarks.procs import Group, Meter, Proc, RedisStats, start, wait_http
from chute.gateway._server import SERVERS
from chute.testing import free_port

#: The gateway's default ASGI server: its rows are ``chute-<backend>``, the others ``+server``.
DEFAULT_SERVER = SERVERS[0]

PAYLOAD = {"text": "hello", "n": 1}


def echoed(result: object) -> bool:
    """Whether ``result`` is the echo container's answer to :data:`PAYLOAD` (it answers a small
    body as ``{"body": <the body as text>, "content_type": …}``)."""
    return isinstance(result, dict) and json.loads(result.get("body") or "null") == PAYLOAD


BODY = json.dumps(PAYLOAD).encode()
JSON = {"Content-Type": "application/json"}
CHUNK = b"x" * 2**20
ROOT = Path(__file__).resolve().parent.parent


class Skip(Exception):
    """This system does not take part in this scenario; the message says why."""


async def _large_body(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(piece)
        yield piece


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit),
        timeout=aiohttp.ClientTimeout(total=600),
    )


async def arrivals(container_url: str) -> dict[str, float]:
    async with _session(1) as s, s.get(container_url + "_arrivals") as r:
        return dict(await r.json())


class System:
    name = "?"
    procs: dict[str, Proc]
    rss_roles: tuple[str, ...] = ()
    redis: RedisStats | None = None

    def __init__(self, container: Proc, container_url: str) -> None:
        self.container_url = container_url
        self.procs = {"client": Proc("client", _self_pid()), "container": container}

    def meter(self) -> Meter:
        return Meter(self.procs, self.redis)

    def reset_peaks(self) -> None:
        for role in self.rss_roles:
            self.procs[role].reset_peak()

    def peaks(self) -> dict[str, float]:
        return {role: round(self.procs[role].peak_rss_mib(), 1) for role in self.rss_roles}

    def rss(self) -> dict[str, float]:
        return {role: round(self.procs[role].rss_mib(), 1) for role in self.rss_roles}

    async def flood(self, n: int, concurrency: int, meter: Meter) -> list[float]:
        raise NotImplementedError

    async def serial(self, n: int, meter: Meter) -> list[float]:
        raise NotImplementedError

    async def large(self, size: int, meter: Meter) -> list[float]:
        raise NotImplementedError

    async def idle(self, n: int, gap: float, meter: Meter) -> list[float]:
        raise NotImplementedError

    async def poll(self, clients: int, meter: Meter) -> list[float]:
        raise NotImplementedError

    def fleet(self, consumers: int, gateways: int) -> contextlib.AbstractContextManager[None]:
        """Run with ``consumers`` consumer processes (and ``gateways`` gateways, if it has
        any) on the same Redis for the ``fleet`` scenario, which is then a flood."""
        raise Skip("not a system on Redis")


def _self_pid() -> int:
    import os

    return os.getpid()


# -- direct -----------------------------------------------------------------------------------


class Direct(System):
    name = "direct"

    async def _post(self, s: aiohttp.ClientSession, request_id: str, data: Any = BODY) -> None:
        headers = {**JSON, "X-Cortex-Request-ID": request_id}
        async with s.post(self.container_url, data=data, headers=headers) as r:
            r.raise_for_status()
            await r.read()

    async def flood(self, n: int, concurrency: int, meter: Meter) -> list[float]:
        latencies: list[float] = []
        sem = asyncio.Semaphore(concurrency)
        async with _session(concurrency) as s:

            async def one(i: int) -> None:
                async with sem:
                    t = time.perf_counter()
                    await self._post(s, f"d{i}")
                    latencies.append(time.perf_counter() - t)

            await asyncio.gather(*(one(i) for i in range(n)))
        meter.stop()
        return latencies

    async def serial(self, n: int, meter: Meter) -> list[float]:
        latencies = []
        async with _session(1) as s:
            for i in range(n):
                t = time.perf_counter()
                await self._post(s, f"s{i}")
                latencies.append(time.perf_counter() - t)
        meter.stop()
        return latencies

    async def large(self, size: int, meter: Meter) -> list[float]:
        async with _session(1) as s:
            t = time.perf_counter()
            await self._post(s, "large", _large_body(size))
            took = time.perf_counter() - t
        meter.stop()
        return [took]

    async def idle(self, n: int, gap: float, meter: Meter) -> list[float]:
        sent: dict[str, float] = {}
        async with _session(1) as s:
            for _ in range(n):
                await asyncio.sleep(gap)
                rid = f"i{secrets.token_hex(6)}"
                sent[rid] = time.time()
                await self._post(s, rid)
        meter.stop()
        seen = await arrivals(self.container_url)
        return [seen[rid] - t for rid, t in sent.items()]

    async def poll(self, clients: int, meter: Meter) -> list[float]:
        return await self.flood(clients, clients, meter)


# -- chute ------------------------------------------------------------------------------------


def gateway_has_long_poll() -> bool:
    """Whether the gateway answers ``GET …?wait=`` (issue 5): it then reads the query string."""
    from chute.gateway import _app as app

    source = inspect.getsource(app)
    try:  # since issue 16 the routes live in rooms beside app.py
        from chute.gateway import _results

        source += inspect.getsource(_results)
    except ImportError:
        pass
    return "query_string" in source and "wait" in source


class Chute(System):
    rss_roles = ("gateway", "dequeuer")

    def __init__(
        self,
        container: Proc,
        container_url: str,
        *,
        backend: str,
        server: str,
        urls: Urls,
        api_file: Path,
        workers: int,
        logs: Path,
        poll_mode: str,
    ) -> None:
        super().__init__(container, container_url)
        self.name = f"chute-{backend}" + ("" if server == DEFAULT_SERVER else f"+{server}")
        self.backend = backend
        self.server = server
        self.urls = urls
        self.api_file = api_file
        self.api = "bench"
        self.workers = workers
        self.logs = logs
        self.poll_mode = poll_mode
        if urls.redis:
            self.redis = RedisStats(urls.redis)
            self.procs["backend"] = Proc("redis-server", self.redis.pid, precise=True)
        if urls.server is not None:
            # The backend's own server; beside Redis (redis+gcs) it gets its own column.
            self.procs["backend" if urls.redis is None else urls.server.name] = urls.server

    def _gateway(self, name: str) -> tuple[Proc, str]:
        gport = free_port()
        u = self.urls
        gateway = start(
            name,
            [sys.executable, "-m", "chute", "gateway", str(self.api_file), "--port", str(gport)]
            + ["--queue", u.queue, "--store", u.store, "--max-body-size", "200MiB"]
            + ["--server", self.server],
            self.logs,
        )
        return gateway, f"http://127.0.0.1:{gport}"

    def _dequeuer(self, name: str) -> tuple[Proc, str]:
        u = self.urls
        aport = free_port()
        proc = start(
            name,
            [sys.executable, "-m", "chute_dequeuer", "--api-file", str(self.api_file)]
            + ["--api", self.api, "--workers", str(self.workers)]
            + ["--admin-port", str(aport), "--admin-host", "127.0.0.1"]
            + ["--queue", u.queue, "--store", u.store],
            self.logs,
        )
        return proc, f"http://127.0.0.1:{aport}"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        gateway, self.gateway_url = self._gateway(f"{self.name}-gateway")
        dequeuer, admin = self._dequeuer(f"{self.name}-dequeuer")
        self.procs["gateway"], self.procs["dequeuer"] = gateway, dequeuer
        self.gateway_urls = [self.gateway_url]
        try:
            # Both up before the first scenario, so that neither's start-up (imports, pools)
            # is billed to it.
            wait_http(f"{self.gateway_url}/healthz", proc=gateway.popen)
            wait_http(f"{admin}/healthz", proc=dequeuer.popen)
            yield
        finally:
            dequeuer.stop()
            gateway.stop()

    @contextlib.contextmanager
    def fleet(self, consumers: int, gateways: int) -> Iterator[None]:
        if self.backend != "redis":
            raise Skip("the fleet scenario measures what one Redis serves (chute-redis)")
        if self.server != DEFAULT_SERVER:
            raise Skip(f"the fleet runs on the default server ({DEFAULT_SERVER}) only")
        one = {role: self.procs[role] for role in ("gateway", "dequeuer")}
        extra_gw = [self._gateway(f"{self.name}-gateway{i + 2}") for i in range(gateways - 1)]
        extra_dq = [self._dequeuer(f"{self.name}-dequeuer{i + 2}") for i in range(consumers - 1)]
        try:
            for proc, url in extra_gw + extra_dq:
                wait_http(f"{url}/healthz", proc=proc.popen)
            gws, dqs = [p for p, _ in extra_gw], [p for p, _ in extra_dq]
            self.procs["gateway"] = Group("gateways", [one["gateway"], *gws])
            self.procs["dequeuer"] = Group("dequeuers", [one["dequeuer"], *dqs])
            self.gateway_urls = [self.gateway_url, *(url for _, url in extra_gw)]
            yield
        finally:
            self.procs.update(one)
            self.gateway_urls = [self.gateway_url]
            for proc, _ in extra_dq + extra_gw:
                proc.stop()

    @contextlib.asynccontextmanager
    async def _backends(self) -> AsyncIterator[tuple[Any, Any]]:
        from chute import open_queue, open_store

        queue, store = open_queue(self.urls.queue), open_store(self.urls.store)
        try:
            yield queue, store
        finally:
            await queue.aclose()
            await store.aclose()

    async def _submit(
        self, s: aiohttp.ClientSession, data: Any = BODY, i: int = 0
    ) -> tuple[str, float]:
        t = time.time()
        url = f"{self.gateway_urls[i % len(self.gateway_urls)]}/{self.api}"
        async with s.post(url, data=data, headers=JSON) as r:
            if r.status != 200:
                raise RuntimeError(f"submit failed: {r.status} {await r.text()}")
            return str((await r.json())["id"]), t

    async def _drained(self, queue: Any) -> bool:
        """Wait until the queue is empty; False at once if it cannot count (Pub/Sub)."""
        from chute.errors import ChuteError

        while True:
            try:
                depth = await queue.depth(self.api)
            except ChuteError:
                return False
            if depth.queued + depth.in_flight == 0:
                return True
            await asyncio.sleep(0.01)

    async def _finished(self, store: Any, submitted: dict[str, float]) -> list[float]:
        sem = asyncio.Semaphore(32)

        async def one(rid: str, t: float) -> float:
            async with sem:
                for _ in range(3000):
                    record = await store.get(self.api, rid)
                    if record is not None and record.finished_at is not None:
                        if record.status != "completed":
                            raise RuntimeError(f"request {rid} {record.status}: {record.error}")
                        return float(record.finished_at) - t
                    await asyncio.sleep(0.01)
                raise RuntimeError(f"request {rid} did not finish: {record}")

        return list(await asyncio.gather(*(one(r, t) for r, t in submitted.items())))

    async def flood(self, n: int, concurrency: int, meter: Meter) -> list[float]:
        submitted: dict[str, float] = {}
        sem = asyncio.Semaphore(concurrency)
        async with self._backends() as (queue, store):
            async with _session(concurrency) as s:

                async def one(i: int) -> None:
                    async with sem:
                        rid, t = await self._submit(s, BODY, i)
                        submitted[rid] = t

                await asyncio.gather(*(one(i) for i in range(n)))
            if not await self._drained(queue):  # then every record is what tells
                latencies = await self._finished(store, submitted)
                meter.stop()
                return latencies
            meter.stop()
            return await self._finished(store, submitted)

    async def _wait_one(self, store: Any, rid: str, t: float, interval: float) -> float:
        while True:
            record = await store.get(self.api, rid)
            if record is not None and record.finished_at is not None:
                if record.status != "completed":
                    raise RuntimeError(f"request {rid} {record.status}: {record.error}")
                return float(record.finished_at) - t
            await asyncio.sleep(interval)

    async def serial(self, n: int, meter: Meter) -> list[float]:
        latencies = []
        async with self._backends() as (_, store), _session(1) as s:
            for _ in range(n):
                rid, t = await self._submit(s)
                latencies.append(await self._wait_one(store, rid, t, 0.0005))
            meter.stop()
        return latencies

    async def large(self, size: int, meter: Meter) -> list[float]:
        async with self._backends() as (_, store), _session(1) as s:
            rid, t = await self._submit(s, _large_body(size))
            took = await self._wait_one(store, rid, t, 0.01)
            meter.stop()
        return [took]

    async def idle(self, n: int, gap: float, meter: Meter) -> list[float]:
        sent: dict[str, float] = {}
        async with self._backends() as (_, store), _session(1) as s:
            for _ in range(n):
                await asyncio.sleep(gap)
                rid, t = await self._submit(s)
                sent[rid] = t
            for rid, t in sent.items():
                await self._wait_one(store, rid, t, 0.01)
            meter.stop()
        seen = await arrivals(self.container_url)
        return [seen[rid] - t for rid, t in sent.items()]

    async def poll(self, clients: int, meter: Meter) -> list[float]:
        """``clients`` clients each submit one request and wait for its result through the
        gateway: ``GET …?wait=`` when the gateway has it, else GET every 50 ms."""
        long_poll = self.poll_mode == "wait" or (
            self.poll_mode == "auto" and gateway_has_long_poll()
        )
        latencies: list[float] = []
        async with _session(clients) as s:

            async def one() -> None:
                rid, _ = await self._submit(s)
                t = time.perf_counter()
                url = f"{self.gateway_url}/{self.api}/{rid}" + ("?wait=20" if long_poll else "")
                while True:
                    async with s.get(url) as r:
                        body = await r.json()
                    if body["status"] == "completed":
                        latencies.append(time.perf_counter() - t)
                        return
                    if body["status"] not in ("in_queue", "in_progress"):
                        raise RuntimeError(f"request {rid}: {body}")
                    if not long_poll:
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(one() for _ in range(clients)))
        meter.stop()
        return latencies


def collect(
    read: Callable[[list[str]], dict[str, float]], submitted: dict[str, float], interval: float
) -> dict[str, float]:
    """Id → done time of every submitted id, read with ``read`` (an MGET of up to 1,000 ids)
    until all are done. It waits for the last one submitted first, one read of one key per
    ``interval``, and only then reads them all (polling the stragglers): MGETs of thousands of
    pending keys every few ms would show in Redis's CPU as the system's cost."""
    last = next(reversed(submitted))
    while len(submitted) > 1 and not read([last]):
        time.sleep(interval)
    done: dict[str, float] = {}
    pending = list(submitted)
    while pending:
        for i in range(0, len(pending), 1000):
            done.update(read(pending[i : i + 1000]))
        pending = [t for t in pending if t not in done]
        if pending:
            time.sleep(interval)
    return done


class RedisClientSystem(System):
    """A system whose client submits straight to Redis and reads the results there (Celery,
    the floor): ``_submit`` one job, ``_done`` the finished ones among ids; the scenarios are
    the same for both."""

    #: Why ``large`` and ``poll`` do not apply (the system's own words).
    large_skip = "a job in Redis is not made for a 100 MiB payload"
    poll_skip = "the clients read results from Redis, not over HTTP"

    def _submit(self) -> tuple[str, float]:
        raise NotImplementedError

    def _done(self, ids: list[str]) -> dict[str, float]:
        raise NotImplementedError

    def _collect(self, submitted: dict[str, float], interval: float) -> dict[str, float]:
        return collect(self._done, submitted, interval)

    async def flood(self, n: int, concurrency: int, meter: Meter) -> list[float]:
        submitted = dict(self._submit() for _ in range(n))
        done = self._collect(submitted, 0.02)
        meter.stop()
        return [done[t] - submitted[t] for t in submitted]

    async def serial(self, n: int, meter: Meter) -> list[float]:
        latencies = []
        for _ in range(n):
            job_id, t = self._submit()
            latencies.append(self._collect({job_id: t}, 0.0005)[job_id] - t)
        meter.stop()
        return latencies

    async def large(self, size: int, meter: Meter) -> list[float]:
        raise Skip(self.large_skip)

    async def idle(self, n: int, gap: float, meter: Meter) -> list[float]:
        sent: dict[str, float] = {}
        for _ in range(n):
            await asyncio.sleep(gap)
            job_id, t = self._submit()
            sent[job_id] = t
        self._collect(sent, 0.01)
        meter.stop()
        seen = await arrivals(self.container_url)
        return [seen[job_id] - t for job_id, t in sent.items()]

    async def poll(self, clients: int, meter: Meter) -> list[float]:
        raise Skip(self.poll_skip)


# -- Celery -----------------------------------------------------------------------------------


class CeleryRedis(RedisClientSystem):
    name = "celery-redis"
    large_skip = "a Celery message is not made for a 100 MiB payload (users store it elsewhere)"
    poll_skip = "Celery clients read results from Redis, not over HTTP"

    def __init__(
        self, container: Proc, container_url: str, *, redis_url: str, logs: Path, pool: int
    ) -> None:
        super().__init__(container, container_url)
        self.redis_url = redis_url
        self.logs = logs
        self.pool = pool
        self.redis = RedisStats(redis_url)
        self.procs["backend"] = Proc("redis-server", self.redis.pid, precise=True)
        self.env = {"CHUTE_BENCH_CELERY_REDIS": redis_url, "CHUTE_BENCH_CONTAINER": container_url}

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        import os

        os.environ.update(self.env)
        from benchmarks import celery_app

        celery_app.app.conf.broker_url = celery_app.app.conf.result_backend = self.redis_url
        self.app = celery_app.app
        self.task = celery_app.call_container
        self.results = self.redis.client.__class__.from_url(self.redis_url)
        self.results.flushdb()
        worker = self._worker(1)
        self.procs["celery"] = worker
        try:
            self._wait_workers([worker])
            yield
        finally:
            worker.stop()
            self.results.flushdb()

    def _worker(self, i: int) -> Proc:
        return start(
            "celery-worker" + ("" if i == 1 else str(i)),
            [sys.executable, "-m", "celery", "-A", "benchmarks.celery_app", "worker"]
            + ["--pool", "prefork", "--concurrency", str(self.pool), "--loglevel", "WARNING"]
            + ["--hostname", f"bench{i}@%h"],
            self.logs,
            tree=True,
            env=self.env,
            cwd=ROOT,
        )

    def _wait_workers(self, workers: list[Proc]) -> None:
        deadline = time.monotonic() + 60
        while len(self.app.control.ping(timeout=0.5)) < len(workers):
            if any(w.popen and w.popen.poll() is not None for w in workers) or (
                time.monotonic() > deadline
            ):
                raise RuntimeError("a Celery worker did not start; see celery-worker*.log")

    @contextlib.contextmanager
    def fleet(self, consumers: int, gateways: int) -> Iterator[None]:
        one = self.procs["celery"]
        extra = [self._worker(i + 2) for i in range(consumers - 1)]
        try:
            self._wait_workers([one, *extra])
            self.procs["celery"] = Group("celery", [one, *extra])
            yield
        finally:
            self.procs["celery"] = one
            for worker in extra:
                worker.stop()

    def _done(self, ids: list[str]) -> dict[str, float]:
        """Task id → date_done (epoch seconds) for the finished ones."""
        out: dict[str, float] = {}
        keys = [f"celery-task-meta-{i}" for i in ids]
        for tid, raw in zip(ids, self.results.mget(keys), strict=True):
            if raw is not None:
                meta = json.loads(raw)
                if meta["status"] != "SUCCESS":
                    raise RuntimeError(f"Celery task {tid}: {meta}")
                out[tid] = datetime.fromisoformat(meta["date_done"]).timestamp()
        return out

    def _submit(self) -> tuple[str, float]:
        t = time.time()
        return str(self.task.delay(PAYLOAD).id), t


# -- the hand-written floor -------------------------------------------------------------------


class Floor(RedisClientSystem):
    """:mod:`benchmarks.floor`: LPUSH a JSON job, a worker process of ``workers`` coroutines
    BRPOPs it, POSTs to the container with aiohttp and SETs the answer (7-day expiry). The
    client submits and reads results the way Celery's does (one LPUSH each; MGET polling)."""

    name = "floor"
    large_skip = "a job in a Redis list is not made for a 100 MiB payload"
    poll_skip = "the floor's clients read results from Redis, not over HTTP"

    def __init__(
        self, container: Proc, container_url: str, *, redis_url: str, logs: Path, workers: int
    ) -> None:
        super().__init__(container, container_url)
        self.redis_url = redis_url
        self.logs = logs
        self.workers = workers
        self.redis = RedisStats(redis_url)
        self.procs["backend"] = Proc("redis-server", self.redis.pid, precise=True)
        self.client = self.redis.client.__class__.from_url(redis_url)

    def _worker(self, i: int) -> Proc:
        return start(
            "floor-worker" + ("" if i == 1 else str(i)),
            [sys.executable, "-m", "benchmarks.floor", "--redis", self.redis_url]
            + ["--container", self.container_url, "--workers", str(self.workers)],
            self.logs,
            cwd=ROOT,
        )

    def _wait_workers(self, workers: list[Proc]) -> None:
        """Until each worker holds its BRPOPs (so that its start-up is not billed)."""
        deadline = time.monotonic() + 30
        while True:
            clients = self.client.client_list()
            blocked = sum(1 for c in clients if c.get("cmd") == "brpop")
            if blocked >= len(workers) * self.workers:
                return
            for w in workers:
                if w.popen is not None and w.popen.poll() is not None:
                    raise RuntimeError("the floor worker exited; see floor-worker*.log")
            if time.monotonic() > deadline:
                raise RuntimeError("the floor worker did not start; see floor-worker*.log")
            time.sleep(0.05)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self.client.flushdb()
        worker = self._worker(1)
        self.procs["floor"] = worker
        try:
            self._wait_workers([worker])
            yield
        finally:
            worker.stop()
            self.client.flushdb()

    @contextlib.contextmanager
    def fleet(self, consumers: int, gateways: int) -> Iterator[None]:
        one = self.procs["floor"]
        extra = [self._worker(i + 2) for i in range(consumers - 1)]
        try:
            self._wait_workers([one, *extra])
            self.procs["floor"] = Group("floor", [one, *extra])
            yield
        finally:
            self.procs["floor"] = one
            for worker in extra:
                worker.stop()

    def _submit(self) -> tuple[str, float]:
        from benchmarks.floor import QUEUE

        job_id = secrets.token_hex(8)
        t = time.time()
        self.client.lpush(QUEUE, json.dumps({"id": job_id, "payload": PAYLOAD}))
        return job_id, t

    def _done(self, ids: list[str]) -> dict[str, float]:
        from benchmarks.floor import RESULT

        out: dict[str, float] = {}
        for job_id, raw in zip(ids, self.client.mget([RESULT + i for i in ids]), strict=True):
            if raw is not None:
                done = json.loads(raw)
                if not echoed(done.get("result")):
                    raise RuntimeError(f"floor job {job_id}: {done}")
                out[job_id] = float(done["done"])
        return out
