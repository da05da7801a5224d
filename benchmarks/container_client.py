"""Which HTTP client should the dequeuer use for its calls to the user container?

    python benchmarks/container_client.py [--requests 3000] [--rounds 3]

Starts a local echo server (``chute.testing.echo`` under uvicorn with httptools, in its own
process)
and POSTs a small JSON body to it with each client, 1 and 32 requests in flight. Reports the
client process's CPU time per request (``time.process_time``: what the dequeuer pays, whatever
the server costs) and requests per second, median over interleaved rounds. The figures are in
docs/dequeuer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from chute.testing import free_port

BODY = json.dumps({"text": "hello", "numbers": list(range(50))}).encode()
HEADERS = {"Content-Type": "application/json", "X-Cortex-Request-ID": "bench"}


def start_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "chute.testing.echo:app",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("echo server did not start")


Call = Callable[[], Awaitable[None]]


async def drive(call: Call, requests: int, concurrency: int) -> tuple[float, float]:
    """Run ``requests`` calls, ``concurrency`` at a time: (CPU ms per request, requests/s)."""
    remaining = requests

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / requests * 1000, requests / wall


async def with_aiohttp(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    import aiohttp

    # As the dequeuer configures it (chute_dequeuer.container.ContainerClient).
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:

        async def call() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                json.loads(await response.read())

        await drive(call, 50, concurrency)  # warm the pool
        return await drive(call, requests, concurrency)


async def with_httpx(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:

        async def call() -> None:
            response = await client.post(url, content=BODY, headers=HEADERS)
            json.loads(response.content)

        await drive(call, 50, concurrency)
        return await drive(call, requests, concurrency)


CLIENTS = {"aiohttp": with_aiohttp, "httpx": with_httpx}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/"
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for _ in range(args.rounds):  # interleaved, so machine noise hits every client alike
            for name, run in CLIENTS.items():
                for concurrency in (1, 32):
                    figures = asyncio.run(run(url, args.requests, concurrency))
                    results.setdefault((name, concurrency), []).append(figures)
    finally:
        server.terminate()
        server.wait()

    import aiohttp
    import httpx

    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
        f"httpx {httpx.__version__}, {args.requests} requests x {args.rounds} rounds"
    )
    print(f"{'client':8} {'in flight':>9} {'CPU ms/request':>15} {'requests/s':>11}")
    for (name, concurrency), runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        print(f"{name:8} {concurrency:>9} {cpu:>15.3f} {rate:>11.0f}")


if __name__ == "__main__":
    main()
