"""Sessions: ``nox`` runs tests, lint and types (what CI runs); ``nox -s bench`` benchmarks.

Each session installs the workspace from ``uv.lock`` with ``uv sync`` into its own venv; the
``tests`` session runs every suite in that one venv, three suites at a time.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint", "types"]
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
#: The distributions: folder under packages/ → import package.
PACKAGES = {
    "core": "chute",
    "dequeuer": "chute_dequeuer",
    "backends-redis": "chute_redis",
    "backends-sqs": "chute_sqs",
    "backends-gcs": "chute_gcs",
    "k8s": "chute_k8s",
}
#: Test suites: each package's own tests/, plus the cross-package end-to-end tests.
SUITES = {
    "core": "packages/core/tests",
    "dequeuer": "packages/dequeuer/tests",
    "redis": "packages/backends-redis/tests",
    "sqs": "packages/backends-sqs/tests",
    "gcs": "packages/backends-gcs/tests",
    "k8s": "packages/k8s/tests",
    "e2e": "tests",
}
#: Every suite mostly waits (on subprocesses, services, sockets, timers), so each runs on
#: pytest-xdist workers, a test file at a time per worker (module-scoped servers stay shared
#: within a file). The backends' suites then start their services (moto, the GCS and Pub/Sub
#: emulators) once per worker, and still finish in half to two thirds of the time.
WORKERS = ["--numprocesses=auto", "--maxprocesses=4"]
#: How a suite's tests are spread over the workers, unless a file at a time. The e2e
#: suite's modules that share a process (a chute dev, a browser) keep their tests on one worker
#: with an ``xdist_group`` mark; its other tests, each with processes of its own, spread one
#: by one, so that one long file does not hold a worker alone to the end.
DIST = {"e2e": "loadgroup"}


def sync(session: nox.Session, *groups: str) -> None:
    args = ["uv", "sync", "--frozen", "--all-packages", "--no-default-groups"]
    for group in groups:
        args += ["--group", group]
    session.run_install(
        *args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}, silent=True
    )


#: Suites run at the same time in the ``tests`` session. Each mostly waits, on its own workers,
#: so several side by side keep the cores busy. On CI's 2 cores the suites took 433 s one after
#: the other, ~290 s two at a time and ~225 s three at a time (longest first).
LANES = 3
#: The order the lanes take the suites in: the longest first, so no long one starts last.
LONGEST_FIRST = ["e2e", "core", "sqs", "dequeuer", "gcs", "redis", "k8s"]


def pytest_argv(name: str, pytest_args: list[str]) -> list[str]:
    return [SUITES[name], *WORKERS, f"--dist={DIST.get(name, 'loadfile')}", *pytest_args]


def run_in_lanes(
    session: nox.Session, names: list[str], pytest_args: list[str], env: dict[str, str | None]
) -> list[str]:
    """Run the suites ``names``, :data:`LANES` at a time; return those that failed. Each one's
    output goes to a file and is shown whole when it ends, so suites never interleave."""
    full_env = dict(os.environ)
    full_env["PATH"] = os.pathsep.join([str(session.bin), full_env.get("PATH", "")])
    full_env["VIRTUAL_ENV"] = str(session.virtualenv.location)
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    logs = Path(session.create_tmp()) / "suites"
    logs.mkdir(parents=True, exist_ok=True)

    def run(name: str) -> tuple[str, int, float, Path]:
        log = logs / f"{name}.log"
        started = time.monotonic()
        with log.open("wb") as out:
            code = subprocess.call(
                ["pytest", *pytest_argv(name, pytest_args)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        return name, code, time.monotonic() - started, log

    order = sorted(names, key=lambda n: LONGEST_FIRST.index(n) if n in LONGEST_FIRST else -1)
    session.log(f"suites, {LANES} at a time: {', '.join(order)}")
    failed = []
    with ThreadPoolExecutor(LANES) as pool:
        for done in as_completed([pool.submit(run, name) for name in order]):
            name, code, took, log = done.result()
            session.log(f"suite {name}: pytest {' '.join(pytest_argv(name, pytest_args))}")
            print(log.read_text(errors="replace"), flush=True)
            verdict = "passed" if code == 0 else f"FAILED (exit status {code})"
            session.log(f"suite {name} {verdict} in {took:.0f} s")
            if code != 0:
                failed.append(name)
    return failed


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suites against real services (CHUTE_REQUIRE_SERVICES=1 makes a missing
    service fail instead of skip).

    Each suite is its own pytest run (their conftests would clash in one), in one venv; a
    failing suite does not stop the others, and the session ends naming the ones that failed.
    Arguments that name suites pick them, the rest go to pytest:
    ``nox -s tests -- core e2e -x -k webhook``. One suite runs in the foreground; several run
    :data:`LANES` at a time, the longest first, each one's output shown whole when it ends.
    """
    sync(session, "test")
    chosen = [arg for arg in session.posargs if arg in SUITES]
    pytest_args = [arg for arg in session.posargs if arg not in SUITES]
    # The tests start hundreds of Python processes (gateways, dequeuers, containers, xdist
    # workers). Where the environment sets PYTHONDONTWRITEBYTECODE (this machine's image does),
    # each compiled every module it imports again: a second of CPU per gateway or dequeuer
    # instead of a third. Their bytecode is cached in the session's venv, not the source tree.
    env = {
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": None,
        "PYTHONPYCACHEPREFIX": os.path.join(session.virtualenv.location, "pycache"),
    }
    names = chosen or list(SUITES)
    if len(names) == 1:
        args = pytest_argv(names[0], pytest_args)
        session.log(f"suite {names[0]}: pytest {' '.join(args)}")
        try:
            session.run("pytest", *args, env=env)
        except CommandFailed:
            session.error(f"failed suite: {names[0]}")
        return
    failed = run_in_lanes(session, names, pytest_args, env)
    if failed:
        session.error(f"failed suites: {', '.join(failed)} (of {', '.join(chosen or SUITES)})")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and formatting), and deptry: each package declares what its sources import
    (and nothing it does not use)."""
    sync(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    for folder in PACKAGES:
        session.run(
            "deptry", "--config", f"packages/{folder}/pyproject.toml", f"packages/{folder}/src"
        )


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    """mypy --strict over every package's sources, then over each test suite (one run per
    suite: each has a conftest.py and helper modules of its own, found through MYPYPATH)."""
    sync(session, "types", "test", "bench")  # bench: the optional ASGI servers
    session.run("mypy", *(f"--package={p}" for p in PACKAGES.values()))
    for path in SUITES.values():
        mypy_path = os.pathsep.join([path, os.environ.get("MYPYPATH", "")]).rstrip(os.pathsep)
        session.run("mypy", path, env={"MYPYPATH": mypy_path})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (not run by CI): chute on each backend beside the direct call, one run.
    Extra arguments go to benchmarks/bench.py, e.g. ``nox -s bench -- --requests 5000``."""
    sync(session, "test", "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)
