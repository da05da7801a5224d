"""A lone request on the Redis joint path, as an idle dequeuer takes it: a receiver waits on
an empty queue, one request is submitted, the receive (with the start) answers; then its ack.
Reports Redis's CPU per request and the submit-to-received latency, on a private redis-server.

    python -m benchmarks.lone_wake [--requests 1000] [--redis-url URL]

Run it in two checkouts, alternating, to compare them (docs/performance.md, sixth round): the
figures move with the machine, the difference between trees in the same minutes does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import redis

from benchmarks.cli import redis_for
from chute.testing.store import body_of, new_record
from chute_redis.queue import RedisQueue
from chute_redis.store import RedisStore

API = "lone"
BODY = b'{"x": 1}'


def _cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(url: str, requests: int) -> tuple[float, float]:
    """Redis CPU µs per request and the median submit-to-received latency in ms."""
    raw = redis.Redis.from_url(url)
    async with (
        RedisQueue(url) as queue,
        RedisStore(url) as store,
        RedisQueue(url) as gateway_queue,
        RedisStore(url) as gateway_store,
    ):
        receiver, sender = store.joint(queue), gateway_store.joint(gateway_queue)
        assert receiver is not None
        assert sender is not None
        # A first receive finds the queue empty: the next ones start on the wake list.
        assert await receiver.receive(API, wait=0.2, start=True) == []
        latencies = []
        cpu = _cpu(raw)
        for _ in range(requests):
            waiting = asyncio.ensure_future(receiver.receive(API, wait=5.0, lease=30.0, start=True))
            await asyncio.sleep(0.002)  # the receiver is blocked on the wake list
            t = time.perf_counter()
            await sender.submit(new_record(API), body_of(BODY))
            [received] = await waiting
            latencies.append(time.perf_counter() - t)
            assert received.started
            await queue.ack(received.delivery)
        cpu = _cpu(raw) - cpu
    raw.close()
    return cpu * 1e6 / requests, statistics.median(latencies) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--redis-url", help="a Redis to use (default: a private redis-server)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = redis_for(stack, args.redis_url)
        cpu_us, p50_ms = asyncio.run(measure(url, args.requests))
    print(
        f"lone request, waiting receiver ({args.requests}): Redis CPU {cpu_us:.1f} us per "
        f"request (submit, wake, receive and start, ack); submit -> received p50 {p50_ms:.3f} ms"
    )


if __name__ == "__main__":
    main()
