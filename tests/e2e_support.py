"""Helpers for the cross-package end-to-end tests: real processes, real HTTP, real backends.

Processes are started the way a user starts them (``python -m chute dev …``, ``python -m chute
gateway …``, ``python -m chute_dequeuer …``, hypercorn for the example container), each in a
session of its own with its output in a log file under the test's temporary directory, and are
always stopped (their whole process group) when the test ends. Fixtures are in conftest.py; this
module has a name of its own so that it never clashes with a package's ``conftest``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import httpx
import msgspec
import pytest

import chute.testing
from chute.testing import free_port, http
from chute.testing.services import FoundService, unavailable

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "examples" / "hello-world"
EXAMPLE = EXAMPLE_DIR / "api.yaml"
API = "hello-world"
PY = sys.executable
#: How long anything may take to come up or finish on a busy 2-core machine.
PATIENCE = 60.0


#: :func:`chute.testing.eventually`, as patient as the rest of these tests.
eventually = functools.partial(chute.testing.eventually, timeout=PATIENCE)


def http_ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return http().get(url, timeout=2.0).status_code == 200
    return False


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_alive(pgid: int) -> bool:
    """Whether any live process is in the process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


class Proc:
    """A real child process in its own session, its output appended to ``log``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name.replace('/', '-')}.log"
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait(self, timeout: float = PATIENCE) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:g} s") from None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL the whole group if it does not stop in time."""
        if self.running():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()


class Processes:
    """Starts processes for one test and stops every one of them afterwards."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def start(self, name: str, argv: list[str], **kwargs: Any) -> Proc:
        proc = Proc(name, argv, self.log_dir, **kwargs)
        self.started.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()}" for p in self.started)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


# -- backends ---------------------------------------------------------------------------------


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory.resolve() / 'chute.db'}"


def redis_backend_url(service: FoundService) -> str:
    """A URL on the found Redis (database 15 unless it names one) with a key prefix of its own,
    so that runs never see each other's keys."""
    parts = urlsplit(service.url)
    path = parts.path if parts.path.strip("/") else "/15"
    query = urlencode({**dict(parse_qsl(parts.query)), "prefix": f"e2e-{secrets.token_hex(6)}"})
    return urlunsplit(parts._replace(path=path, query=query))


def backend_url(kind: str, directory: Path, request: pytest.FixtureRequest) -> str:
    """The queue and store URL for a backend: SQLite in ``directory``, or the test Redis."""
    if kind == "sqlite":
        return sqlite_url(directory)
    if importlib.util.find_spec("chute_redis") is None:
        unavailable("the Redis backend (chute-redis) is not installed")
    url = redis_backend_url(request.getfixturevalue("redis_service"))
    request.addfinalizer(lambda: delete_redis_keys(url))
    return url


def delete_redis_keys(url: str) -> None:
    """Remove every key a test's Redis URL wrote (its own prefix), so shared servers stay clean."""
    import redis

    parts = urlsplit(url)
    prefix = dict(parse_qsl(parts.query))["prefix"]
    client = redis.Redis.from_url(urlunsplit(parts._replace(query="")))
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


# -- chute dev --------------------------------------------------------------------------------

READY_LINE = re.compile(r"ready: gateway on (http://\S+)")


class ChuteDev:
    """``chute dev`` as a real process."""

    def __init__(self, proc: Proc, state_dir: Path, port: int) -> None:
        self.proc = proc
        self.state_dir = state_dir
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = PATIENCE) -> None:
        def ready() -> bool:
            if not self.proc.running():
                raise AssertionError(f"chute dev exited early:\n{self.proc.output()}")
            return READY_LINE.search(self.proc.output()) is not None

        eventually(ready, "chute dev's ready line", timeout=timeout)

    def info(self) -> dict[str, Any]:
        """What chute dev wrote to dev.json: its pid and every child's."""
        info: dict[str, Any] = msgspec.json.decode((self.state_dir / "dev.json").read_bytes())
        return info

    def child_pids(self) -> dict[str, int]:
        return {p["name"]: p["pid"] for p in self.info()["processes"]}


def start_chute_dev(
    processes: Processes,
    api_file: Path,
    state_dir: Path,
    *extra: str,
    port: int | None = None,
) -> ChuteDev:
    port = port or free_port()
    argv = [PY, "-m", "chute", "dev", str(api_file), "--port", str(port)]
    argv += ["--state-dir", str(state_dir), "--grace-period", "10", *extra]
    proc = processes.start("chute-dev", argv, cwd=state_dir.parent)
    return ChuteDev(proc, state_dir, port)


# -- the example, run piece by piece ----------------------------------------------------------


def write_api_file(path: Path, port: int, *, workers: int = 4, name: str = API) -> Path:
    """The example's API, on ``port`` (for stacks the test runs itself, without chute dev)."""
    path.write_text(
        f"""- name: {name}
  kind: AsyncAPI
  pod:
    port: {port}
    max_concurrency: {workers}
    containers:
      - name: api
        image: quay.io/chute/hello-world:0.1.0
        command: ["python", "-m", "hypercorn", "app:app", "--bind", "127.0.0.1:$(CORTEX_PORT)"]
        readiness_probe:
          http_get: {{port: {port}, path: /healthz}}
          period_seconds: 1
"""
    )
    return path


class Stack:
    """The example's container, a gateway and dequeuers, each started by the test itself."""

    def __init__(
        self,
        processes: Processes,
        directory: Path,
        backend: str,
        *,
        store: str | None = None,
        **gateway: str,
    ):
        """``backend`` is the queue URL, and the store's too unless ``store`` names another."""
        self.processes = processes
        self.port = free_port()
        self.api_file = write_api_file(directory / "api.yaml", self.port)
        self.backend = backend
        self.store = store or backend
        self.gateway_url = f"http://127.0.0.1:{free_port()}"
        self.gateway_options = gateway
        self.dequeuers: list[Proc] = []

    def start_container(self, env: dict[str, str] | None = None) -> Proc:
        argv = [PY, "-m", "hypercorn", "app:app", "--bind", f"127.0.0.1:{self.port}"]
        env = {"CORTEX_PORT": str(self.port), **(env or {})}
        return self.processes.start("container", argv, cwd=EXAMPLE_DIR, env=env)

    def start_gateway(self) -> Proc:
        port = self.gateway_url.rsplit(":", 1)[1]
        argv = [PY, "-m", "chute", "gateway", str(self.api_file), "--port", port]
        argv += ["--queue", self.backend, "--store", self.store]
        for key, value in self.gateway_options.items():
            argv += [f"--{key.replace('_', '-')}", value]
        proc = self.processes.start("gateway", argv)
        eventually(lambda: http_ok(f"{self.gateway_url}/healthz"), "the gateway's /healthz")
        return proc

    def start_dequeuer(self, *extra: str) -> tuple[Proc, int]:
        admin = free_port()
        argv = [PY, "-m", "chute_dequeuer", "--api-file", str(self.api_file), "--api", API]
        argv += ["--user-port", str(self.port), "--admin-port", str(admin)]
        argv += ["--queue", self.backend, "--store", self.store, *extra]
        proc = self.processes.start(f"dequeuer-{len(self.dequeuers) + 1}", argv)
        self.dequeuers.append(proc)
        return proc, admin


def submit(gateway_url: str, payload: Any, headers: dict[str, str] | None = None) -> str:
    """POST ``payload`` to the example API; return the new request's id."""
    response = http().post(f"{gateway_url}/{API}", json=payload, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["id"]
    return request_id


def request_status(gateway_url: str, request_id: str) -> dict[str, Any]:
    """``GET /<api>/<id>`` through the gateway."""
    response = http().get(f"{gateway_url}/{API}/{request_id}", timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_finished(gateway_url: str, ids: list[str], what: str) -> dict[str, dict[str, Any]]:
    """Every request's ``GET`` answer, once none is queued or running any more."""

    bodies: dict[str, dict[str, Any]] = {}
    waiting = {"in_queue", "in_progress"}

    def finished() -> dict[str, dict[str, Any]] | None:
        # A finished request stays as it is (terminal states are final): read the rest only.
        for i in ids:
            if i not in bodies:
                body = request_status(gateway_url, i)
                if body["status"] in waiting:
                    return None
                bodies[i] = body
        return {i: bodies[i] for i in ids}

    done: dict[str, dict[str, Any]] = eventually(finished, what)
    return done


def calls_by_request(container_log: str) -> dict[str, list[int]]:
    """The example container's call numbers per request id, from its log lines."""
    calls: dict[str, list[int]] = {}
    for match in re.finditer(r"hello-world: call (\d+): request (\S+)", container_log):
        calls.setdefault(match.group(2), []).append(int(match.group(1)))
    return calls


def submit_to(gateway_url: str, api: str, payload: Any) -> str:
    """POST ``payload`` to ``api``; return the new request's id."""
    response = http().post(f"{gateway_url}/{api}", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["id"]
    return request_id


def wait_for(gateway_url: str, api: str, request_id: str) -> dict[str, Any]:
    """``GET /<api>/<id>`` once the request is no longer queued or running."""

    def finished() -> dict[str, Any] | None:
        response = http().get(f"{gateway_url}/{api}/{request_id}", timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return None if body["status"] in ("in_queue", "in_progress") else body

    body: dict[str, Any] = eventually(finished, f"request {request_id}")
    return body


# -- shared scenarios ---------------------------------------------------------------------------

MiB = 1024 * 1024


def gcs_bucket_url(gcs_service: FoundService) -> str:
    """A bucket of its own on the GCS emulator, as a ``gs://`` store URL."""
    try:
        import chute_gcs  # noqa: F401
    except ImportError:
        unavailable("the Google Cloud backends (chute-gcs) are not installed")
    endpoint = gcs_service.url.rstrip("/")
    bucket = f"chute-e2e-{secrets.token_hex(5)}"
    response = http().post(
        f"{endpoint}/storage/v1/b", params={"project": "e2e"}, json={"name": bucket}, timeout=10
    )
    assert response.status_code == 200, response.text
    return f"gs://{bucket}/e2e-{secrets.token_hex(3)}?{urlencode({'endpoint_url': endpoint})}"


def fifty_mib_and_twenty_small(gateway_url: str) -> int:
    """20 small requests at once and one 50 MiB body through the example; every one completes
    with its own result, the big one's every byte in order. Returns how many completed."""
    blob = "abcdefghij" * (5 * MiB // 10) * 10  # 50 MiB of ASCII
    big = msgspec.json.encode({"text": "big", "blob": blob})
    assert len(big) > 50 * MiB
    small = [{"text": f"request {i}", "token": secrets.token_hex(4)} for i in range(20)]

    async def run() -> tuple[list[dict[str, Any]], dict[str, Any], list[str], str]:
        async with httpx.AsyncClient(base_url=gateway_url, timeout=PATIENCE) as http:
            ids: list[str] = [""] * len(small)

            async def submit(i: int) -> None:
                response = await http.post(f"/{API}", json=small[i])
                assert response.status_code == 200, response.text
                ids[i] = response.json()["id"]

            async with anyio.create_task_group() as tg:
                for i in range(len(small)):
                    tg.start_soon(submit, i)
            response = await http.post(
                f"/{API}", content=big, headers={"content-type": "application/json"}
            )
            assert response.status_code == 200, response.text
            big_id = response.json()["id"]

            async def done(request_id: str) -> dict[str, Any]:
                with anyio.fail_after(PATIENCE * 2):
                    while True:
                        body: dict[str, Any] = (await http.get(f"/{API}/{request_id}")).json()
                        if body["status"] not in ("in_queue", "in_progress"):
                            return body
                        await anyio.sleep(0.1)

            bodies = [await done(i) for i in ids]
            return bodies, await done(big_id), ids, big_id

    bodies, big_answer, ids, big_id = anyio.run(run)
    for i, body in enumerate(bodies):
        assert body["status"] == "completed", body
        assert body["result"]["echo"] == small[i]
        assert body["result"]["request_id"] == ids[i]
    assert big_answer["status"] == "completed", {
        k: v for k, v in big_answer.items() if k != "result"
    }
    assert big_answer["result"]["request_id"] == big_id
    assert big_answer["result"]["echo"]["blob"] == blob  # every byte, in order
    return len(bodies) + 1


def sigkilled_dequeuer(
    processes: Processes, directory: Path, queue_url: str, store_url: str
) -> list[str]:
    """A dequeuer with 2 s leases is SIGKILLed while the container works on 4 of 8 slow
    requests; a new dequeuer completes every one, each with its own payload's result from its
    latest call, and the interrupted ones with a higher attempt. Returns the ids."""
    stack = Stack(processes, directory, queue_url, store=store_url)
    container = stack.start_container()
    stack.start_gateway()
    gateway = stack.gateway_url
    first = stack.start_dequeuer("--workers", "4", "--lease", "2")[0]
    payloads = {}
    for i in range(8):
        payload = {"text": f"slow {i}", "sleep": 1.5, "token": secrets.token_hex(4)}
        response = http().post(f"{gateway}/{API}", json=payload, timeout=30)
        assert response.status_code == 200, response.text
        payloads[response.json()["id"]] = payload

    running = eventually(
        lambda: (calls := calls_by_request(container.output())) and len(calls) >= 4 and calls,
        "the container to be working on 4 requests",
    )
    first.signal(signal.SIGKILL)
    first.wait()
    interrupted = {i for i in running if request_status(gateway, i)["status"] != "completed"}
    assert interrupted, "the kill came too late: every request seen had already completed"

    stack.start_dequeuer("--workers", "4", "--lease", "2")
    finals = wait_finished(gateway, list(payloads), "every request to finish")
    assert all(b["status"] == "completed" for b in finals.values()), finals
    calls = calls_by_request(container.output())
    for request_id, body in finals.items():
        assert body["result"]["echo"] == payloads[request_id]
        assert body["result"]["call"] == calls[request_id][-1]
    for request_id in interrupted:
        assert len(calls[request_id]) >= 2, calls[request_id]
        assert finals[request_id]["attempts"] >= 2
    return list(payloads)
