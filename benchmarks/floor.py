"""The hand-written floor (issue 12): the least a Python user can write to run JSON jobs
asynchronously against the same container, with nothing chute or Celery adds.

A client ``LPUSH``\\ es a JSON job ``{"id": …, "payload": …}`` to one Redis list; this worker
process runs ``--workers`` coroutines that each ``BRPOP`` a job (first in, first out), POST
its payload to the container with aiohttp (the id as ``X-Cortex-Request-ID``) and ``SET`` the
answer under
``floor:result:<id>`` with the 7-day expiry Celery's results and chute's records get. No
gateway, no record of the request, no retries, no leases: 3 Redis commands per job.

The stored value is ``{"done": <epoch seconds when the answer came>, "result": <the answer>}``
so that the harness times submit→result stored like the other systems, and checks the result.

Run by the harness as ``python -m benchmarks.floor --redis URL --container URL --workers N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import aiohttp
import redis.asyncio as aioredis

QUEUE = "floor:jobs"
RESULT = "floor:result:"
#: Celery's ``result_expires`` in the benchmark and chute's default retention: 7 days.
EXPIRY = 7 * 24 * 3600


async def work(r: aioredis.Redis, http: aiohttp.ClientSession, container: str) -> None:
    while True:
        popped = await r.brpop([QUEUE], timeout=1)
        if popped is None:
            continue
        job = json.loads(popped[1])
        try:
            async with http.post(
                container,
                data=json.dumps(job["payload"]),
                headers={"Content-Type": "application/json", "X-Cortex-Request-ID": job["id"]},
            ) as response:
                response.raise_for_status()
                done = {"done": time.time(), "result": await response.json()}
        except (aiohttp.ClientError, ValueError) as exc:  # the harness fails the run on it
            done = {"done": time.time(), "error": repr(exc)}
        await r.set(RESULT + job["id"], json.dumps(done), ex=EXPIRY)


async def main(redis_url: str, container: str, workers: int) -> None:
    r = aioredis.Redis.from_url(redis_url, max_connections=workers + 4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    connector = aiohttp.TCPConnector(limit=workers, limit_per_host=workers)
    async with aiohttp.ClientSession(connector=connector) as http:
        tasks = [asyncio.create_task(work(r, http, container)) for _ in range(workers)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await r.aclose()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__)
    p.add_argument("--redis", required=True)
    p.add_argument("--container", required=True)
    p.add_argument("--workers", type=int, default=32)
    args = p.parse_args()
    import uvloop

    uvloop.run(main(args.redis, args.container, args.workers))
