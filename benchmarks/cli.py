"""``nox -s bench`` / ``python -m benchmarks``: every system through every scenario, in
interleaved rounds, then the table of medians, Redis's cost per request, the targets of issues
12 and 6 and a JSON file.

Systems: the container called directly (the ceiling), Celery 5 on Redis (prefork 8), the
hand-written asyncio floor (:mod:`benchmarks.floor`), and chute on each backend of
:data:`benchmarks.backends.BACKENDS` that can run here (the others are skipped with the
reason), its gateway on the default server, plus the other servers on ``--servers-on``.
Scenarios (``--scenarios``): flood, serial, large, idle, poll, fleet (a flood with several
consumer processes and two gateways on one Redis); ``--soak N`` adds a memory soak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.backends import BACKENDS, EMULATED, EMULATED_REQUESTS, Unavailable, skip
from benchmarks.procs import Proc, start, wait_http
from benchmarks.systems import (
    DEFAULT_SERVER,
    CeleryRedis,
    Chute,
    Direct,
    Floor,
    Skip,
    System,
)
from chute.gateway._server import SERVERS
from chute.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("flood", "serial", "large", "idle", "poll", "fleet")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=5000, help="requests per flood (%(default)s)")
    p.add_argument("--concurrency", type=int, default=32, help="in flight (%(default)s)")
    p.add_argument("--serial", type=int, default=200, help="one-at-a-time requests")
    p.add_argument("--large-mib", type=int, default=100, help="the large payload's size")
    p.add_argument("--idle", type=int, default=20, help="spaced submits per round (idle)")
    p.add_argument("--idle-gap", type=float, default=0.25, help="seconds between them")
    p.add_argument("--clients", type=int, default=500, help="clients in the poll scenario")
    p.add_argument("--poll-mode", choices=("auto", "wait", "poll"), default="auto")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--backends", default=",".join(BACKENDS), help="chute backends to try")
    p.add_argument(
        "--container",
        choices=sorted(CONTAINERS),
        default="echo",
        help="the container every system calls: a minimal echo app (default) or the "
        "hello-world example; both under uvicorn (httptools, uvloop)",
    )
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="gateway ASGI servers to compare; the first is the default's row (%(default)s)",
    )
    p.add_argument("--servers-on", default="redis", help="backends run on every --servers")
    p.add_argument("--no-celery", action="store_true")
    p.add_argument("--celery-pool", type=int, default=8)
    p.add_argument(
        "--no-floor", action="store_true", help="leave out the hand-written asyncio floor"
    )
    p.add_argument(
        "--fleet-consumers",
        type=int,
        default=3,
        help="fleet scenario: dequeuer (or Celery/floor worker) processes on one Redis",
    )
    p.add_argument(
        "--fleet-gateways", type=int, default=2, help="fleet scenario: chute gateway processes"
    )
    p.add_argument(
        "--redis-url",
        default=None,
        help="an existing Redis (default: a private redis-server started for the run)",
    )
    p.add_argument("--soak", type=int, default=0, help="requests in the memory soak (0: none)")
    p.add_argument("--soak-on", default="redis", help="backends soaked")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="record py-spy stacks of the gateway and dequeuer during each flood into DIR",
    )
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        metavar="JSON",
        help="a run of the code before issue 12: its figures are the targets' 'before'",
    )
    p.add_argument("--quick", action="store_true", help="small numbers, one round (~2 min)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.serial, args.rounds = 1000, 50, 1
        args.idle, args.clients, args.large_mib = 8, 100, 20
    return args


@contextlib.contextmanager
def private_redis(logs: Path) -> Iterator[tuple[str, Proc | None]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH; pass --redis-url")
    port = free_port()
    proc = start(
        "redis-server",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--protected-mode", "no"],
        logs,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        with contextlib.suppress(redis.ConnectionError):
            client.ping()
            break
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.stop()


def redis_for(stack: contextlib.ExitStack, url: str | None) -> str:
    """``url``, else a private redis-server's, kept for the life of ``stack`` (the micro
    benchmarks' ``--redis-url``)."""
    if url is not None:
        return url
    logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    private, _ = stack.enter_context(private_redis(logs))
    return private


#: Container name → (ASGI app, working directory, whether it records arrivals for ``idle``).
CONTAINERS = {
    "echo": ("chute.testing.echo:app", ROOT, True),
    "example": ("app:app", ROOT / "examples" / "hello-world", False),
}


def write_api_file(path: Path, port: int, workers: int) -> None:
    path.write_text(
        f"""- name: bench
  kind: AsyncAPI
  pod:
    port: {port}
    max_concurrency: {workers}
    containers:
      - name: api
        image: chute/bench-echo
        command: ["python", "-m", "uvicorn", "chute.testing.echo:app"]
"""
    )


async def run_scenario(
    system: System, scenario: str, args: argparse.Namespace, rnd: int
) -> report.Row | None:
    if isinstance(system, Chute) and system.backend in EMULATED:
        cap = EMULATED_REQUESTS
        args = argparse.Namespace(
            **{
                **vars(args),
                "requests": min(args.requests, cap),
                "serial": min(args.serial, cap // 10),
                "clients": min(args.clients, cap // 5),
            }
        )
    if scenario == "fleet":
        with system.fleet(args.fleet_consumers, args.fleet_gateways):
            return await _measure(system, scenario, args, rnd)
    return await _measure(system, scenario, args, rnd)


async def _measure(
    system: System, scenario: str, args: argparse.Namespace, rnd: int
) -> report.Row | None:
    system.reset_peaks()
    before = system.rss()
    meter = system.meter()
    meter.start()
    if scenario == "flood" and args.profile is not None and system.rss_roles:
        from benchmarks.profile import recording

        roles = {role: system.procs[role] for role in system.rss_roles}
        with recording(roles, args.profile, f"{system.name}-r{rnd + 1}"):
            lat = await system.flood(args.requests, args.concurrency, meter)
    elif scenario in ("flood", "fleet"):
        lat = await system.flood(args.requests, args.concurrency, meter)
    elif scenario == "serial":
        lat = await system.serial(args.serial, meter)
    elif scenario == "large":
        lat = await system.large(args.large_mib * 2**20, meter)
    elif scenario == "idle":
        lat = await system.idle(args.idle, args.idle_gap, meter)
    elif scenario == "poll":
        lat = await system.poll(args.clients, meter)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    return report.row(system.name, scenario, rnd, lat, meter.stop(), system.peaks(), before)


async def soak(system: Chute, total: int, args: argparse.Namespace) -> dict[str, Any]:
    """Floods until ``total`` requests went through, sampling RSS after each."""
    samples: list[dict[str, float]] = []
    done = 0
    while done < total:
        n = min(args.requests, total - done)
        meter = system.meter()
        meter.start()
        await system.flood(n, args.concurrency, meter)
        done += n
        samples.append({"requests": done, **system.rss()})
        print(f"  soak {system.name}: {done}/{total} {samples[-1]}", file=sys.stderr)
    out: dict[str, Any] = {"requests": total, "samples": samples}
    for role in ("gateway", "dequeuer"):
        values = [s[role] for s in samples]
        out[role] = {"start": values[0], "peak": max(values), "end": values[-1]}
    return out


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="chute-bench-"))
    logs = tmp / "logs"
    logs.mkdir()
    scenarios = [s for s in args.scenarios.split(",") if s]
    app, app_dir, records_arrivals = CONTAINERS[args.container]
    if "idle" in scenarios and not records_arrivals:
        print(f"idle: skipped, the {args.container} container does not record arrivals")
        scenarios.remove("idle")
    with contextlib.ExitStack() as stack:
        if args.redis_url is None:
            args.redis_url, _ = stack.enter_context(private_redis(logs))
        cport = free_port()
        container = start(
            "container",
            [sys.executable, "-m", "uvicorn", app, "--port", str(cport)]
            + ["--no-access-log", "--log-level", "warning", "--loop", "uvloop"]
            + ["--http", "httptools", "--lifespan", "off"],
            logs,
            cwd=app_dir,
            env={"CORTEX_PORT": str(cport)},
        )
        stack.callback(container.stop)
        container_url = f"http://127.0.0.1:{cport}/"
        wait_http(container_url + "healthz", proc=container.popen)
        api_file = tmp / "api.yaml"
        write_api_file(api_file, cport, args.concurrency)

        systems: list[Any] = [Direct(container, container_url)]
        if not args.no_celery:
            try:
                import celery  # noqa: F401

                base = args.redis_url.split("?")[0].rsplit("/", 1)[0]
                systems.append(
                    CeleryRedis(
                        container,
                        container_url,
                        redis_url=f"{base}/1",
                        logs=logs,
                        pool=args.celery_pool,
                    )
                )
            except ImportError:
                print("skipping celery-redis: celery is not installed", file=sys.stderr)
        if not args.no_floor:
            base = args.redis_url.split("?")[0].rsplit("/", 1)[0]
            systems.append(
                Floor(
                    container,
                    container_url,
                    redis_url=f"{base}/2",
                    logs=logs,
                    workers=args.concurrency,
                )
            )
        servers = [s for s in args.servers.split(",") if s]
        for backend in [b for b in args.backends.split(",") if b]:
            if backend not in BACKENDS:
                raise SystemExit(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
            try:
                urls = stack.enter_context(BACKENDS[backend](args, tmp))
            except Unavailable as exc:
                skip(backend, str(exc))
                continue
            except Exception as exc:  # a backend that fails to set up must not stop the run
                skip(backend, f"setup failed: {exc!r}")
                continue
            on = servers if backend in args.servers_on.split(",") else servers[:1]
            for server in on:
                systems.append(
                    Chute(
                        container,
                        container_url,
                        backend=backend,
                        server=server,
                        urls=urls,
                        api_file=api_file,
                        workers=args.concurrency,
                        logs=logs,
                        poll_mode=args.poll_mode,
                    )
                )

        rows: list[report.Row] = []
        skipped: dict[str, str] = {}
        broken: dict[str, str] = {}
        for rnd in range(args.rounds):
            # Rotate the order each round, so that no system always runs first or last.
            k = rnd % len(systems)
            for system in systems[k:] + systems[:k]:
                if system.name in broken:
                    continue
                print(f"round {rnd + 1}/{args.rounds}: {system.name}", file=sys.stderr)
                ctx = getattr(system, "running", contextlib.nullcontext)
                try:
                    started = contextlib.ExitStack()
                    started.enter_context(ctx())
                except Exception as exc:  # a system that cannot start must not stop the run
                    broken[system.name] = f"did not start: {exc} (logs: {logs})"
                    print(f"skipping {system.name}: {broken[system.name]}", file=sys.stderr)
                    continue
                with started:
                    for scenario in scenarios:
                        try:
                            r = await run_scenario(system, scenario, args, rnd)
                        except Skip as exc:
                            skipped[f"{system.name} {scenario}"] = str(exc)
                            continue
                        if r is not None:
                            rows.append(r)
                            print(
                                f"  {scenario}: {r.rps:.0f} req/s p50 {r.p50_ms:.2f} ms "
                                f"cpu {r.cpu_ms_per_request} rss {r.peak_rss_mib}",
                                file=sys.stderr,
                            )

        soaked: dict[str, Any] = {}
        if args.soak:
            for system in systems:
                if isinstance(system, Chute) and system.backend in args.soak_on.split(","):
                    if system.server != servers[0]:
                        continue
                    with system.running():
                        soaked[system.name] = await soak(system, args.soak, args)

    meds = report.medians(rows)
    print()
    print(
        f"chute benchmark: flood {args.requests} requests at {args.concurrency} in flight,"
        f" serial {args.serial}, large {args.large_mib} MiB, idle {args.idle} per round,"
        f" poll {args.clients} clients; median of {args.rounds} interleaved rounds;"
        f" {report.machine()['nproc']} CPUs ({report.machine()['cpu']}),"
        f" Python {report.machine()['python']}"
    )
    print()
    print(report.table(meds))
    skipped.update(broken)
    reasons = sorted(set(skipped.items()), key=lambda kv: kv[0])
    if reasons:
        print()
        for what, why in reasons:
            print(f"skipped {what}: {why}")
    costs = report.redis_cost(meds)
    if costs:
        print()
        print(
            f"Redis's cost per request (fleet: {args.fleet_consumers} dequeuers or workers,"
            f" {args.fleet_gateways} chute gateways, on one Redis):"
        )
        print(report.redis_table(costs))
    print()
    print(f"Targets (issues 12 and 6, chute-redis on {DEFAULT_SERVER}):")
    for m in meds:
        if m["scenario"] == "large":
            m["payload_mib"] = args.large_mib
    before = json.loads(args.before.read_text())["medians"] if args.before else None
    goals = report.targets(meds, soaked or None, before)
    for line in goals:
        print(f"- {line}")
    report.write_json(
        args.json,
        {k: str(v) for k, v in vars(args).items()},
        rows,
        meds,
        {
            "soak": soaked,
            "skipped": skipped,
            "redis_cost": costs,
            "targets": goals,
        },
    )
    print(f"\nJSON: {args.json}\nlogs: {logs}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import uvloop

    return uvloop.run(main_async(args))
