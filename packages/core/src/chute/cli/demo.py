"""``chute demo``: the first run. The hello-world example under ``chute dev``, a few requests
submitted through the client, their results printed, everything stopped again."""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chute.errors import ChuteError

if TYPE_CHECKING:
    from chute._dev import Supervisor
    from chute.cli import CommandRegistrar

ORDER = 5
EXAMPLE = Path("examples") / "hello-world" / "api.yaml"
#: What the demo submits: plain requests, and one that takes a moment.
PAYLOADS: list[dict[str, Any]] = [
    {"text": "world"},
    {"text": "chute"},
    {"text": "Cortex containers", "sleep": 0.5},
]
#: Lines of each process's output kept to show if something goes wrong.
KEEP_LINES = 40


def register(commands: CommandRegistrar) -> None:
    parser = commands.add(
        "demo",
        run=run,
        help="run the hello-world example, submit a few requests and print their results",
        description=(
            "Run examples/hello-world with `chute dev` (gateway, dequeuer, container) on a "
            "temporary SQLite backend, submit a few requests with the Python client, print "
            "their results and stop. Run it from a clone of the chute repository."
        ),
    )
    parser.add_argument(
        "--api-file",
        type=Path,
        help="the API file to run (default: examples/hello-world/api.yaml of the clone)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show every process's output as it runs"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up if the demo has not finished by then (default 120)",
    )


def find_example() -> Path:
    """The hello-world API file: under the current directory or one of its parents (a clone
    of the repository), else beside the installed sources (an editable install)."""
    here = Path.cwd().resolve()
    source_root = Path(__file__).resolve().parents[5]  # packages/core/src/chute/cli/demo.py
    for base in [here, *here.parents, source_root]:
        if (base / EXAMPLE).is_file():
            return base / EXAMPLE
    raise ChuteError(
        f"cannot find {EXAMPLE} in {here} or its parents: chute demo runs the example from a "
        "clone of the chute repository, so run it from the clone (or pass --api-file)"
    )


def run(args: argparse.Namespace) -> int:
    import tempfile

    import anyio

    from chute import _dev as dev

    api_file = args.api_file or find_example()
    with tempfile.TemporaryDirectory(prefix="chute-demo-") as state_dir:
        # Always the embedded backend, whatever CHUTE_QUEUE_URL says: the demo needs nothing.
        setup = dev.plan(api_file, port=0, state_dir=state_dir, grace_period=10.0)
        return anyio.run(_demo, setup, args.verbose, args.timeout)


async def _demo(setup: Any, verbose: bool, limit: float) -> int:
    import anyio

    from chute import _dev as dev

    recent: dict[str, deque[str]] = {}
    printer = dev.PrefixPrinter([p.name for p in setup.processes], stream=sys.stderr)

    def sink(name: str, line: str) -> None:
        recent.setdefault(name, deque(maxlen=KEEP_LINES)).append(line)
        if verbose or name == dev.SUPERVISOR:
            printer(name, line)

    supervisor = dev.Supervisor(setup, sink)
    names = ", ".join(p.name for p in setup.processes)
    print(
        f"chute demo: running {setup.api_file} with chute dev ({names}) "
        f"on SQLite in {setup.state_dir}",
        flush=True,
    )
    outcome: list[str] = []

    async def submit_and_wait() -> None:
        try:
            with anyio.fail_after(limit):
                await _submit_all(supervisor)
            outcome.append("ok")
        except Exception as exc:  # reported below, with the processes' output
            outcome.append(f"{type(exc).__name__}: {exc}")

    with anyio.move_on_after(limit) as scope:
        code = await dev.supervise(supervisor, submit_and_wait)
    if scope.cancelled_caught:
        outcome.append(f"not done within {limit:g} s")
    if code == 0 and outcome == ["ok"]:
        print(
            "\nNext: run it yourself with `chute dev examples/hello-world/api.yaml` and, in "
            'another terminal, `chute submit hello-world --json \'{"text": "hi"}\' --wait`.'
        )
        return 0
    reason = supervisor.failure or (outcome[0] if outcome else "interrupted")
    print(f"\nchute demo failed: {reason}", file=sys.stderr)
    if not verbose:
        for name, lines in recent.items():
            if name != dev.SUPERVISOR:
                for line in lines:
                    printer(name, line)
    return 1


async def _submit_all(supervisor: Supervisor) -> None:
    import anyio
    import msgspec

    from chute.client import AsyncClient, Result
    from chute.protocol import Status

    api = supervisor.plan.apis[0]
    async with AsyncClient(supervisor.plan.gateway_url) as client:
        ids = []
        for payload in PAYLOADS:
            request_id = await client.submit(api.name, json=payload)
            print(
                f"submitted {msgspec.json.encode(payload).decode()} -> id {request_id}", flush=True
            )
            ids.append(request_id)
        results: dict[str, Result] = {}

        async def wait(request_id: str) -> None:
            results[request_id] = await client.wait(api.name, request_id, timeout=60)

        async with anyio.create_task_group() as tg:
            for request_id in ids:
                tg.start_soon(wait, request_id)
    for request_id in ids:
        answer = results[request_id]
        print(f"\nGET {supervisor.plan.gateway_url}{api.endpoint}/{request_id}")
        print(msgspec.json.format(msgspec.json.encode(answer), indent=2).decode(), flush=True)
        if answer.status is not Status.COMPLETED:
            raise ChuteError(f"request {request_id} ended {answer.status}, expected completed")
