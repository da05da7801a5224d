"""chute's benchmark harness: chute on each backend against the same container called directly.

    nox -s bench                      # or: python benchmarks/bench.py --requests 2000

Every system runs in the same process tree on this machine, in interleaved rounds, and the
table reports medians over rounds so that machine noise hits all systems alike. Figures:

* flood: N small JSON requests submitted with C in flight; completed requests per second
  (submit of the first to completion of the last), p50/p99 submit→completed;
* serial: one request at a time, submit→completed p50/p99 (the latency chute adds);
* CPU milliseconds per request of the gateway, the dequeuer and the container, and the peak
  RSS of the gateway and dequeuer (from /proc).

The container is the hello-world example served by uvicorn (httptools, uvloop), so it is never
the bottleneck; the comparator drives that same container directly with an asyncio httpx loop
of the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello-world"
PAYLOAD = {"text": "hello", "n": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc, no psutil needed)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, args: list[str], log_dir: Path, **kwargs: Any) -> Proc:
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
    env = {**os.environ, "CHUTE_LOG_LEVEL": "WARNING", **kwargs.pop("env", {})}
    return Proc(name, subprocess.Popen(args, stdout=log, stderr=log, env=env, **kwargs))


@dataclass
class Result:
    system: str
    scenario: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the direct comparator --------------------------------------------------------------------


async def direct_flood(url: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(url, json=PAYLOAD, headers={"X-Cortex-Request-ID": str(i)})
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0, latencies


# -- chute ------------------------------------------------------------------------------------


async def chute_flood(
    gateway: str, api: str, store_url: str, queue_url: str, n: int, concurrency: int
) -> tuple[float, list[float]]:
    from chute import open_queue, open_store

    submitted: dict[str, float] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                t = time.time()
                r = await client.post(f"{gateway}/{api}", json=PAYLOAD)
                r.raise_for_status()
                submitted[r.json()["id"]] = t

        t0 = time.time()
        await asyncio.gather(*(one() for _ in range(n)))
    # Wait on the queue's own depth (cheap), then read every record's finish time.
    queue, store = open_queue(queue_url), open_store(store_url)
    try:
        while True:
            depth = await queue.depth(api)
            if depth.queued + depth.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        latencies, last = [], t0
        for request_id, t in submitted.items():
            for _ in range(500):
                record = await store.get(api, request_id)
                if record is not None and record.finished_at is not None:
                    break
                await asyncio.sleep(0.01)
            if record is None or record.status != "completed" or record.finished_at is None:
                raise RuntimeError(f"request {request_id} did not complete: {record}")
            latencies.append(record.finished_at - t)
            last = max(last, record.finished_at)
    finally:
        await queue.aclose()
        await store.aclose()
    return last - t0, latencies


async def chute_serial(gateway: str, api: str, store_url: str, n: int) -> list[float]:
    from chute import open_store

    store = open_store(store_url)
    latencies = []
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(n):
                t = time.time()
                r = await client.post(f"{gateway}/{api}", json=PAYLOAD)
                request_id = r.json()["id"]
                while True:
                    record = await store.get(api, request_id)
                    if record is not None and record.finished_at is not None:
                        break
                    await asyncio.sleep(0.0005)
                latencies.append(record.finished_at - t)
    finally:
        await store.aclose()
    return latencies


async def direct_serial(url: str, n: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(n):
            t = time.perf_counter()
            r = await client.post(url, json=PAYLOAD, headers={"X-Cortex-Request-ID": str(i)})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)
    return latencies


@dataclass
class ChuteStack:
    name: str
    queue_url: str
    store_url: str
    gateway: Proc
    dequeuer: Proc
    gateway_url: str

    def stop(self) -> None:
        self.dequeuer.stop()
        self.gateway.stop()


@contextlib.contextmanager
def chute_stack(
    name: str, url: str, api_file: Path, api: str, container_port: int, workers: int, logs: Path
) -> Iterator[ChuteStack]:
    gport = free_port()
    py = sys.executable
    gateway = start(
        f"{name}-gateway",
        [py, "-m", "chute", "gateway", str(api_file), "--port", str(gport)]
        + ["--queue", url, "--store", url],
        logs,
    )
    dequeuer = start(
        f"{name}-dequeuer",
        [py, "-m", "chute_dequeuer", "--api-file", str(api_file), "--api", api]
        + ["--user-port", str(container_port), "--workers", str(workers)]
        + ["--admin-port", str(free_port()), "--queue", url, "--store", url],
        logs,
    )
    stack = ChuteStack(name, url, url, gateway, dequeuer, f"http://127.0.0.1:{gport}")
    try:
        wait_http(f"{stack.gateway_url}/healthz")
        yield stack
    finally:
        stack.stop()


def write_api_file(path: Path, api: str, port: int, workers: int) -> None:
    path.write_text(
        f"""- name: {api}
  kind: AsyncAPI
  pod:
    port: {port}
    max_concurrency: {workers}
    containers:
      - name: api
        image: chute/hello-world
        command: ["python", "-m", "uvicorn", "app:app"]
"""
    )


def measure(procs: list[Proc], run: Any, n: int) -> tuple[Any, dict[str, float]]:
    before = {p.name: p.cpu() for p in procs}
    out = run()
    cpu = {p.name: round((p.cpu() - before[p.name]) * 1000 / n, 3) for p in procs}
    return out, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per flood round")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--serial", type=int, default=200, help="requests in the serial scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated")
    parser.add_argument(
        "--redis-url", default=os.environ.get("CHUTE_BENCH_REDIS", "redis://127.0.0.1:6379/14")
    )
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chute-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    api = "bench"
    cport = free_port()
    api_file = tmp / "api.yaml"
    write_api_file(api_file, api, cport, args.concurrency)
    container = start(
        "container",
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(cport), "--no-access-log"]
        + ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools"],
        logs,
        cwd=EXAMPLE,
        env={"CORTEX_PORT": str(cport)},
    )
    direct_url = f"http://127.0.0.1:{cport}/"
    wait_http(direct_url.rstrip("/") + "/healthz")

    urls = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            urls["sqlite"] = f"sqlite:///{tmp}/chute.db"
        elif backend == "redis":
            sep = "&" if "?" in args.redis_url else "?"
            urls["redis"] = f"{args.redis_url}{sep}prefix=bench-{secrets.token_hex(4)}"
    results: list[Result] = []
    try:
        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr)
            (secs, lat), cpu = measure(
                [container],
                lambda: asyncio.run(direct_flood(direct_url, args.requests, args.concurrency)),
                args.requests,
            )
            results.append(_result("direct", "flood", args.requests, secs, lat, cpu, {}))
            lat, cpu = measure(
                [container],
                lambda: asyncio.run(direct_serial(direct_url, args.serial)),
                args.serial,
            )
            results.append(_result("direct", "serial", args.serial, sum(lat), lat, cpu, {}))
            for name, url in urls.items():
                with chute_stack(name, url, api_file, api, cport, args.concurrency, logs) as st:
                    procs = [st.gateway, st.dequeuer, container]
                    (secs, lat), cpu = measure(
                        procs,
                        lambda st=st, url=url: asyncio.run(
                            chute_flood(
                                st.gateway_url, api, url, url, args.requests, args.concurrency
                            )
                        ),
                        args.requests,
                    )
                    rss = {
                        "gateway": proc_peak_rss_mib(st.gateway.pid),
                        "dequeuer": proc_peak_rss_mib(st.dequeuer.pid),
                    }
                    results.append(
                        _result(f"chute-{name}", "flood", args.requests, secs, lat, cpu, rss)
                    )
                    lat, cpu = measure(
                        procs,
                        lambda st=st, url=url: asyncio.run(
                            chute_serial(st.gateway_url, api, url, args.serial)
                        ),
                        args.serial,
                    )
                    results.append(
                        _result(f"chute-{name}", "serial", args.serial, sum(lat), lat, cpu, rss)
                    )
    finally:
        container.stop()
    table = summarise(results)
    print(render(table, args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "settings": {k: str(v) for k, v in vars(args).items()},
                "rounds": [asdict(r) for r in results],
                "medians": table,
            },
            indent=2,
        )
    )
    print(f"\nJSON: {args.json}\nlogs: {logs}", file=sys.stderr)
    return 0


def _result(
    system: str,
    scenario: str,
    n: int,
    secs: float,
    lat: list[float],
    cpu: dict[str, float],
    rss: dict[str, float],
) -> Result:
    return Result(
        system,
        scenario,
        n,
        round(secs, 4),
        round(n / secs, 1),
        round(percentile(lat, 0.5) * 1000, 3),
        round(percentile(lat, 0.99) * 1000, 3),
        cpu,
        rss,
    )


def summarise(results: list[Result]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r.scenario, r.system) for r in results})
    for scenario, system in keys:
        rs = [r for r in results if (r.scenario, r.system) == (scenario, system)]
        cpu_names = sorted({k for r in rs for k in r.cpu_ms_per_request})
        rss_names = sorted({k for r in rs for k in r.peak_rss_mib})
        rows.append(
            {
                "scenario": scenario,
                "system": system,
                "rps": statistics.median(r.rps for r in rs),
                "p50_ms": statistics.median(r.p50_ms for r in rs),
                "p99_ms": statistics.median(r.p99_ms for r in rs),
                "cpu_ms_per_request": {
                    k: statistics.median(r.cpu_ms_per_request[k] for r in rs) for k in cpu_names
                },
                "peak_rss_mib": {k: max(r.peak_rss_mib[k] for r in rs) for k in rss_names},
            }
        )
    return rows


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"chute benchmark: {args.requests} requests per flood at {args.concurrency} in flight, "
        f"{args.serial} serial, median of {args.rounds} interleaved rounds, {os.cpu_count()} CPUs",
        "",
        "| scenario | system | req/s | p50 ms | p99 ms | CPU ms/req (per process) | peak RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    direct = {r["scenario"]: r for r in rows if r["system"] == "direct"}
    for r in rows:
        cpu = ", ".join(f"{k.split('-')[-1]} {v}" for k, v in r["cpu_ms_per_request"].items())
        rss = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mib"].items())
        out.append(
            f"| {r['scenario']} | {r['system']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {cpu} | {rss} |"
        )
    out.append("")
    for r in rows:
        d = direct.get(r["scenario"])
        if d and r["system"] != "direct":
            if r["scenario"] == "flood":
                out.append(
                    f"{r['system']}: flood throughput = {r['rps'] / d['rps']:.2f} x the direct loop"
                )
            else:
                out.append(
                    f"{r['system']}: serial p50 = direct + {r['p50_ms'] - d['p50_ms']:.2f} ms"
                )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
