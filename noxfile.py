"""Sessions: ``nox`` runs tests, lint and types (what CI runs); ``nox -s bench`` benchmarks.

Each session installs the workspace from ``uv.lock`` with ``uv sync`` into its own venv.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint", "types"]
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
#: Test suites: each package's own tests/, plus the cross-package end-to-end tests.
PACKAGES = ["chute", "chute_dequeuer", "chute_redis", "chute_sqs", "chute_gcs", "chute_k8s"]
SUITES = {
    "core": "packages/core/tests",
    "dequeuer": "packages/dequeuer/tests",
    "redis": "packages/backends-redis/tests",
    "sqs": "packages/backends-sqs/tests",
    "gcs": "packages/backends-gcs/tests",
    "k8s": "packages/k8s/tests",
    "e2e": "tests",
}


def sync(session: nox.Session, *groups: str) -> None:
    args = ["uv", "sync", "--frozen", "--all-packages", "--no-default-groups"]
    for group in groups:
        args += ["--group", group]
    session.run_install(
        *args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}, silent=True
    )


@nox.session(python=PYTHON)
@nox.parametrize("suite", list(SUITES))
def tests(session: nox.Session, suite: str) -> None:
    """Run one test suite against real services (CHUTE_REQUIRE_SERVICES=1 makes a missing
    service fail instead of skip)."""
    sync(session, "test")
    session.run("pytest", SUITES[suite], *session.posargs, env={"PYTHONHASHSEED": "0"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    sync(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    """mypy --strict over every package's sources."""
    sync(session, "types", "test", "bench")  # bench: the optional ASGI servers
    session.run("mypy", *(f"--package={p}" for p in PACKAGES))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (not run by CI): chute on each backend beside the direct call, one run.
    Extra arguments go to benchmarks/bench.py, e.g. ``nox -s bench -- --requests 5000``."""
    sync(session, "test", "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)
