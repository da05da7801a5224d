"""``chute dev``: an API file's whole system as local processes, under one supervisor.

For an API file, :func:`plan` decides what to run — one gateway, and per API one dequeuer and
each container's ``command`` + ``args`` — and :class:`Supervisor` runs it: it streams every
process's output with its name in front, prints a ready line once the gateway and every
container answer, restarts nothing, and stops everything in order (gateway and dequeuers
first, so in-flight work drains into live containers; then the containers) on request or as
soon as any process exits on its own. See docs/dev.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import anyio
import anyio.abc
import httpx
import msgspec
from anyio.streams.text import TextReceiveStream

from chute._version import __version__
from chute.config import API, Container, Probe, dump_apis, load_apis
from chute.container_runtime import (
    HOST_ALIAS,
    Runtime,
    build_argv,
    check_engine,
    container_name,
    image_tag,
    run_argv,
)
from chute.dev_proxy import proxy_env
from chute.dockerfile import ImageStart, choose_dockerfile, read_start
from chute.errors import ChuteError, ConfigError

Role = Literal["gateway", "dequeuer", "container", "proxy"]
#: Receives each output line: (process name, line without its newline).
LineSink = Callable[[str, str], None]

#: The supervisor's own name in the output.
SUPERVISOR = "chute dev"
#: A line longer than this is passed on in pieces rather than buffered whole.
MAX_LINE = 64 * 1024
#: Extra time a dequeuer gets beyond its own grace period before it is killed.
DEQUEUER_MARGIN = 5.0
_VAR_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")


class DevError(ChuteError):
    """``chute dev`` could not start or keep its processes running."""


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` as Kubernetes does in ``command``, ``args`` and ``env`` values.

    ``$(VAR)`` becomes VAR's value; a reference to an undefined variable is left as written;
    ``$$`` is an escaped ``$`` (so ``$$(VAR)`` gives the literal ``$(VAR)``).
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2)
        return env.get(name, match.group(0))

    return _VAR_REFERENCE.sub(replace, text)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ProcessSpec:
    """One process to run: what, where, with which environment."""

    name: str
    role: Role
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    #: Seconds between SIGTERM and SIGKILL when stopping it.
    grace: float
    #: Said when the process exits before everything is ready (what it may be missing).
    hint: str | None = None


@dataclass(frozen=True)
class APIPlan:
    """Where one API's processes listen."""

    name: str
    endpoint: str
    port: int
    admin_port: int


@dataclass(frozen=True)
class DevPlan:
    """Everything ``chute dev`` will run for one API file."""

    api_file: Path
    state_dir: Path
    gateway_url: str
    queue_url: str
    store_url: str
    apis: list[APIPlan]
    processes: list[ProcessSpec] = field(default_factory=list)
    #: The APIs as the gateway and dequeuers see them: the file's, with local ports.
    local_apis: list[API] = field(default_factory=list)
    #: Image builds to run before anything starts (``--runtime docker|podman``).
    builds: list[list[str]] = field(default_factory=list)

    @property
    def pids_file(self) -> Path:
        """Where the running supervisor writes its processes' ids (see :meth:`Supervisor.run`)."""
        return self.state_dir / "dev.json"

    @property
    def mnt(self) -> Path:
        """The directory standing in for the pod's shared ``/mnt`` (``CHUTE_MNT``)."""
        return mnt_dir(self.state_dir)

    @property
    def local_api_file(self) -> Path:
        """Where :attr:`local_apis` are written for the gateway and dequeuers to read."""
        return local_api_file(self.state_dir)

    def prepare(self) -> None:
        """Create the state directory, the ``/mnt`` stand-in and the local API file."""
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.local_api_file.parent.mkdir(exist_ok=True)
        self.local_api_file.write_text(
            f"# Written by chute dev from {self.api_file}, with local ports.\n"
            + dump_apis(self.local_apis)
        )


def mnt_dir(state_dir: Path) -> Path:
    """The directory standing in for the pod's shared ``/mnt`` (``CHUTE_MNT``)."""
    return state_dir / "mnt"


def local_api_file(state_dir: Path) -> Path:
    """The API file with local ports that chute dev's gateway and dequeuers read."""
    return state_dir / "dev" / "apis.yaml"


def default_backend_url(state_dir: Path) -> str:
    """The embedded SQLite backend in the state directory (both queue and store)."""
    return f"sqlite:///{state_dir.resolve() / 'chute.db'}"


def plan(
    api_file: str | os.PathLike[str],
    *,
    port: int = 8888,
    host: str = "127.0.0.1",
    state_dir: str | os.PathLike[str] = ".chute",
    queue_url: str | None = None,
    store_url: str | None = None,
    grace_period: float = 30.0,
    lease: float | None = None,
    access_log: bool = True,
    dockerfiles: Mapping[str, Path] | None = None,
    attach: Mapping[str, int] | None = None,
    runtime: Runtime = "local",
    cortex_address: bool = True,
) -> DevPlan:
    """Check the API file and decide every process, port and environment; start nothing.

    A container without a ``command`` starts as its image would, read from the Dockerfile
    beside the API file (``dockerfiles`` names one per container where the choice is not
    clear; see :mod:`chute.dockerfile`). ``attach`` maps an API to the port of a server the
    user already runs: its dequeuer feeds that server and none of its containers is started.
    ``runtime`` ``docker`` or ``podman`` runs the images instead (built from those Dockerfiles,
    :attr:`DevPlan.builds`; see :mod:`chute.container_runtime`). ``cortex_address``: local
    containers reach the gateway by Cortex's in-cluster URL too, through a small proxy
    (:mod:`chute.dev_proxy`).

    Raises :class:`ConfigError` for an invalid file, an unknown name in ``dockerfiles`` or
    ``attach``, or a container that cannot be started, before anything starts.
    """
    path = Path(api_file).resolve()
    apis = load_apis(path)
    attach = dict(attach or {})
    _check_names(path, apis, dockerfiles or {}, attach)
    starts = {
        (api.name, c.name): _image_start(path, api, c, dockerfiles or {})
        for api in apis
        if api.name not in attach and runtime == "local"
        for c in api.pod.containers
        if not c.command
    }
    state = Path(state_dir).resolve()
    backend = default_backend_url(state)
    queue_url, store_url = queue_url or backend, store_url or backend
    port = port or free_port(host)  # 0: any free port, as for `chute gateway`
    gateway_url = f"http://{_url_host(host)}:{port}"
    mnt = mnt_dir(state)

    # Locally all APIs share one network, unlike pods: each API gets a free port, handed to
    # its container as CORTEX_PORT; the file the gateway and dequeuers read says the same.
    planned = [
        APIPlan(
            api.name,
            api.endpoint,
            _local_port(api, starts, attach),
            free_port(),
        )
        for api in apis
    ]
    local_apis = [_with_port(api, p.port) for api, p in zip(apis, planned, strict=True)]
    local_file = local_api_file(state)

    py = sys.executable
    processes = [
        ProcessSpec(
            name="gateway",
            role="gateway",
            argv=[py, "-m", "chute", "gateway", str(local_file), "--host", host]
            + ["--port", str(port), "--queue", queue_url, "--store", store_url]
            + ["--access-log" if access_log else "--no-access-log"],
            env=_process_env({}),
            cwd=path.parent,
            grace=grace_period,
        )
    ]
    # Cortex's in-cluster address for local containers: their plain-HTTP calls go through a
    # proxy that sends that host to the gateway and everything else where it was going.
    proxy: dict[str, str] = {}
    if cortex_address and runtime == "local" and any(a.name not in attach for a in apis):
        proxy_port = free_port()
        proxy = proxy_env(f"http://127.0.0.1:{proxy_port}")
        processes.append(
            ProcessSpec(
                name="cortex-address",
                role="proxy",
                argv=[py, "-m", "chute.dev_proxy", "--port", str(proxy_port)]
                + ["--gateway", gateway_url],
                env=_process_env({}),
                cwd=path.parent,
                grace=grace_period,
            )
        )
    dequeuer = _dequeuer_command()
    builds: list[list[str]] = []
    for api, p in zip(apis, planned, strict=True):
        argv = dequeuer + ["--api-file", str(local_file), "--api", api.name]
        argv += ["--user-port", str(p.port), "--workers", str(api.pod.max_concurrency)]
        argv += ["--admin-port", str(p.admin_port), "--admin-host", "127.0.0.1"]
        argv += ["--queue", queue_url, "--store", store_url]
        argv += ["--grace-period", _number(grace_period)]
        if lease is not None:
            argv += ["--lease", _number(lease)]
        processes.append(
            ProcessSpec(
                name=f"{api.name}/dequeuer",
                role="dequeuer",
                argv=argv,
                env=_process_env({}),
                cwd=path.parent,
                grace=grace_period + DEQUEUER_MARGIN,
            )
        )
        if api.name in attach:
            continue  # the user runs its server
        if runtime != "local":
            processes += _engine_processes(
                runtime, path, api, p, dockerfiles or {}, gateway_url=gateway_url, mnt=mnt,
                grace=grace_period, builds=builds,
            )  # fmt: skip
            continue
        for container in api.pod.containers:
            env = container_env(container, port=p.port, gateway_url=gateway_url, mnt=mnt)
            start = starts.get((api.name, container.name))
            cwd = path.parent
            if start is None:
                words = [*(container.command or []), *(container.args or [])]
                argv = [expand_vars(a, env) for a in words]
            else:
                # The image's ENV first, the pod's (CORTEX_PORT, the container's env) on top,
                # as in a pod; `args` replace the image's CMD as Kubernetes does.
                env = {**start.env, **env}
                argv = start.argv
                if container.args:
                    argv = [*start.argv[: len(start.argv) - start.cmd_length], *container.args]
                cwd = start.workdir
            if argv[0] in ("python", "python3"):
                argv[0] = py
            env = _process_env({**proxy, **env})  # the container's own env wins
            if start is not None:
                # Programs the image installs with pip are found in chute's own environment.
                env["PATH"] = os.pathsep.join([str(Path(py).parent), env.get("PATH", "")])
                _check_image_program(start, env, path, api, container)
            else:
                _check_executable(argv[0], env.get("PATH"), path, api, container)
            processes.append(
                ProcessSpec(
                    name=f"{api.name}/{container.name}",
                    role="container",
                    argv=argv,
                    env=env,
                    cwd=cwd,
                    grace=grace_period,
                    hint=_requirements_hint(start),
                )
            )

    return DevPlan(
        api_file=path,
        state_dir=state,
        gateway_url=gateway_url,
        queue_url=queue_url,
        store_url=store_url,
        apis=planned,
        processes=processes,
        local_apis=local_apis,
        builds=builds,
    )


def container_env(
    container: Container, *, port: int, gateway_url: str, mnt: Path
) -> dict[str, str]:
    """A container's environment as the pod would give it, plus chute dev's stand-ins.

    Cortex's variables come first, then chute's, then the container's own ``env`` sorted by key
    (as Cortex orders them); each value may refer to the ones before it with ``$(VAR)``.
    """
    env = {
        "CORTEX_VERSION": __version__,
        "CORTEX_LOG_LEVEL": "INFO",
        "CORTEX_PORT": str(port),
        "CHUTE_GATEWAY_URL": gateway_url,
        "CHUTE_MNT": str(mnt),
    }
    for key in sorted(container.env):
        env[key] = expand_vars(container.env[key], env)
    return env


def _process_env(overrides: Mapping[str, str]) -> dict[str, str]:
    # Children inherit this environment (PATH, the virtualenv, credentials), unlike a pod.
    # Unbuffered output so lines appear as they are written; readable logs unless the user
    # chose a format.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("CHUTE_LOG_FORMAT", "text")
    env.update(overrides)
    return env


def _with_port(api: API, port: int) -> API:
    """``api`` listening on ``port``: pod.port and the probes that pointed at pod.port."""
    old = api.pod.port

    def probe(p: Probe | None) -> Probe | None:
        if p is None:
            return None
        http_get, tcp = p.http_get, p.tcp_socket
        if http_get is not None and http_get.port == old:
            http_get = msgspec.structs.replace(http_get, port=port)
        if tcp is not None and tcp.port == old:
            tcp = msgspec.structs.replace(tcp, port=port)
        return msgspec.structs.replace(p, http_get=http_get, tcp_socket=tcp)

    containers = [
        msgspec.structs.replace(
            c, readiness_probe=probe(c.readiness_probe), liveness_probe=probe(c.liveness_probe)
        )
        for c in api.pod.containers
    ]
    pod = msgspec.structs.replace(api.pod, port=port, containers=containers)
    return msgspec.structs.replace(api, pod=pod)


def _dequeuer_command() -> list[str]:
    if importlib.util.find_spec("chute_dequeuer") is None:
        from chute.install import install_line

        raise DevError(
            "chute dev runs the dequeuer sidecar, which is not installed; install it with: "
            + install_line("dequeuer")
        )
    return [sys.executable, "-m", "chute_dequeuer"]


def _check_executable(
    program: str, search: str | None, path: Path, api: API, container: Container
) -> None:
    # Refuse before anything starts rather than after the other processes came up.
    if os.sep in program:
        found = (path.parent / program).is_file()
    else:
        found = shutil.which(program, path=search) is not None
    if not found:
        where = "relative to the API file" if os.sep in program else "on the PATH"
        raise ConfigError(
            f"{path}: API {api.name!r}, container {container.name!r}: "
            f"command {program!r} not found {where}"
        )


def build_images(runtime: Runtime, builds: Sequence[Sequence[str]]) -> None:
    """Check the engine, then run each image build with its output shown; raise
    :class:`DevError` naming the first that fails."""
    check_engine(runtime)
    for argv in builds:
        print(f"{SUPERVISOR}: {_display(argv)}", file=sys.stderr, flush=True)
        if subprocess.run(list(argv), check=False).returncode != 0:
            raise DevError(f"building the image failed: {_display(argv)}")


def attach_port(target: str) -> int:
    """The port of ``--attach API=URL``: the dequeuer is a sidecar and calls its server on
    127.0.0.1, as in a pod, so the URL must be a loopback one (or just a port)."""
    from urllib.parse import urlsplit

    if target.isdigit():
        port = int(target)
    else:
        url = urlsplit(target if "//" in target else f"http://{target}")
        if url.hostname not in ("127.0.0.1", "localhost", "::1") or url.port is None:
            raise ConfigError(
                f"--attach …={target}: give the port of a server on this machine "
                "(http://127.0.0.1:PORT or PORT): the dequeuer calls its container on 127.0.0.1"
            )
        if url.path not in ("", "/"):
            raise ConfigError(f"--attach …={target}: the container is called at /, not a path")
        port = url.port
    if not 1 <= port <= 65535:
        raise ConfigError(f"--attach …={target}: port must be 1..65535")
    return port


def _engine_processes(
    runtime: Runtime,
    path: Path,
    api: API,
    plan: APIPlan,
    dockerfiles: Mapping[str, Path],
    *,
    gateway_url: str,
    mnt: Path,
    grace: float,
    builds: list[list[str]],
) -> list[ProcessSpec]:
    """One ``docker run`` per container of ``api``, as its pod would run them: a container
    without ``command`` is built from its Dockerfile; one with a command runs its ``image``."""
    # Inside the engine's network the gateway is on the host.
    inside_url = gateway_url.replace("127.0.0.1", HOST_ALIAS).replace("localhost", HOST_ALIAS)
    out: list[ProcessSpec] = []
    first: str | None = None
    for container in api.pod.containers:
        image = container.image
        if not container.command:
            image = image_tag(api.name, container.name)
            builds.append(
                build_argv(runtime, _dockerfile(path, api, container, dockerfiles), image)
            )
        env = container_env(container, port=api.pod.port, gateway_url=inside_url, mnt=Path("/mnt"))
        name = container_name(api.name, container.name, plan.port)
        argv = run_argv(
            runtime,
            image=image,
            name=name,
            env=env,
            mnt=mnt,
            publish=(plan.port, api.pod.port) if first is None else None,
            network_of=first,
            command=[expand_vars(a, env) for a in container.command or []],
            args=[expand_vars(a, env) for a in container.args or []],
        )
        first = first or name
        out.append(
            ProcessSpec(
                name=f"{api.name}/{container.name}",
                role="container",
                argv=argv,
                env=_process_env({}),
                cwd=path.parent,
                grace=grace,
            )
        )
    return out


def _check_names(
    path: Path, apis: Sequence[API], dockerfiles: Mapping[str, Path], attach: Mapping[str, int]
) -> None:
    containers = {c.name for api in apis for c in api.pod.containers}
    containers |= {f"{api.name}/{c.name}" for api in apis for c in api.pod.containers}
    for name in dockerfiles:
        if name not in containers:
            known = ", ".join(sorted(containers))
            raise ConfigError(f"--dockerfile {name}=…: {path} has no container {name!r} ({known})")
    names = {api.name for api in apis}
    for name in attach:
        if name not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"--attach {name}=…: {path} has no API {name!r} ({known})")


def _dockerfile(
    path: Path, api: API, container: Container, dockerfiles: Mapping[str, Path]
) -> Path:
    """The Dockerfile of a container without ``command`` (``--dockerfile`` first)."""
    explicit = dockerfiles.get(f"{api.name}/{container.name}", dockerfiles.get(container.name))
    return choose_dockerfile(path, api.name, container.name, explicit=explicit)


def _image_start(
    path: Path, api: API, container: Container, dockerfiles: Mapping[str, Path]
) -> ImageStart:
    return read_start(_dockerfile(path, api, container, dockerfiles))


def _local_port(
    api: API, starts: Mapping[tuple[str, str], ImageStart], attach: Mapping[str, int]
) -> int:
    """Where ``api``'s server listens here: the attached server's port; the pod's own port
    when an image's start names its port without $CORTEX_PORT (it cannot be moved); else a
    free port, handed over as CORTEX_PORT."""
    if api.name in attach:
        return attach[api.name]
    for (name, _), start in starts.items():
        if name == api.name and "CORTEX_PORT" not in " ".join(start.argv):
            return api.pod.port
    return free_port()


def _check_image_program(
    start: ImageStart, env: Mapping[str, str], path: Path, api: API, container: Container
) -> None:
    """Refuse before anything starts when the program the image runs is not installed here."""
    argv = start.argv
    if argv[:2] == ["/bin/sh", "-c"]:
        try:
            words = shlex.split(argv[2])
        except ValueError:
            return  # let the shell say what is wrong
        words = [w for w in words if w != "exec" and "=" not in w.split("/")[0]]
        program = words[0] if words else ""
        if not program or "$" in program:
            return
    else:
        program = argv[0]
    if program in ("python", "python3") or (os.sep in program and Path(program).is_file()):
        return
    if shutil.which(program, path=env.get("PATH")) is None:
        hint = _requirements_hint(start) or "install it in this environment"
        raise ConfigError(
            f"{path}: API {api.name!r}, container {container.name!r}: {start.dockerfile.name} "
            f"starts {program!r}, which is not installed here: {hint}"
        )


def _requirements_hint(start: ImageStart | None) -> str | None:
    if start is None or start.requirements is None:
        return None
    return (
        f"{start.dockerfile.name} installs its dependencies from {start.requirements}: "
        f"pip install -r {start.requirements}"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


# -- running ----------------------------------------------------------------------------------


class PrefixPrinter:
    """Writes each line as ``name | line``, names padded to one width, coloured on a terminal."""

    _COLOURS = (36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96)

    def __init__(self, names: Sequence[str], stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.width = max(len(n) for n in [SUPERVISOR, *names])
        colour = self.stream.isatty() and "NO_COLOR" not in os.environ
        self._colours = {
            name: self._COLOURS[i % len(self._COLOURS)] if colour else 0
            for i, name in enumerate([SUPERVISOR, *names])
        }

    def __call__(self, name: str, line: str) -> None:
        label = f"{name:<{self.width}} |"
        code = self._colours.get(name, 0)
        if code:
            label = f"\x1b[{code}m{label}\x1b[0m"
        self.stream.write(f"{label} {line}\n")
        self.stream.flush()


@dataclass
class _Running:
    spec: ProcessSpec
    process: anyio.abc.Process
    exited: anyio.Event = field(default_factory=anyio.Event)
    returncode: int | None = None


class Supervisor:
    """Runs a :class:`DevPlan`'s processes until asked to stop or until one exits by itself.

    ``ready`` is set once the gateway's ``/healthz`` and every dequeuer's admin ``/healthz``
    answer 200 (the latter means its containers passed their readiness probes).
    """

    def __init__(self, dev: DevPlan, sink: LineSink) -> None:
        self.plan = dev
        self.sink = sink
        self.ready = anyio.Event()
        self._stop = anyio.Event()
        self._shutting_down = False
        self._failure: str | None = None
        self._running: list[_Running] = []
        self._lock: IO[str] | None = None
        self._pumps = 0
        self._pumps_done = anyio.Event()

    async def wait_ready(self) -> bool:
        """Wait until everything is ready (True) or the run is stopping first (False)."""
        async with anyio.create_task_group() as tg:

            async def until(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(until, self.ready)
            tg.start_soon(until, self._stop)
        return self.ready.is_set() and not self._stop.is_set()

    def say(self, message: str) -> None:
        """Print a line of the supervisor's own."""
        self.sink(SUPERVISOR, message)

    def request_stop(self) -> None:
        """Stop every process (gateway and dequeuers first, then containers)."""
        self._stop.set()

    def kill(self) -> None:
        """SIGKILL every process group now (a second Ctrl-C)."""
        for running in self._running:
            _signal_group(running.process.pid, signal.SIGKILL)

    @property
    def stopping(self) -> bool:
        """Whether a stop has been requested (or a process failed)."""
        return self._stop.is_set()

    @property
    def failure(self) -> str | None:
        """Why the run ended badly, if it did."""
        return self._failure

    async def run(self) -> int:
        """Start everything, supervise, stop; return the exit code (0, or 1 after a failure)."""
        self.take_lock()
        try:
            self.plan.prepare()
            async with anyio.create_task_group() as tg:
                try:
                    for spec in self.plan.processes:
                        await self._start(spec, tg)
                    self._write_pids()
                    # For other terminals; chute submit/get/cancel run under this directory
                    # find it in dev.json by themselves.
                    self.say(f"CHUTE_GATEWAY_URL={self.plan.gateway_url}")
                    tg.start_soon(self._watch_ready)
                    await self._stop.wait()
                except DevError as exc:
                    self._fail(str(exc))
                finally:
                    # Even when cancelled from outside: no child outlives the supervisor.
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
                        if self._pumps:
                            with anyio.move_on_after(1.0):  # the last lines still in the pipes
                                await self._pumps_done.wait()
                    tg.cancel_scope.cancel()
        finally:
            self._release_lock()
        return 1 if self._failure else 0

    # -- internals ----------------------------------------------------------------------------

    async def _start(self, spec: ProcessSpec, tg: anyio.abc.TaskGroup) -> None:
        try:
            # A session of its own: our Ctrl-C does not reach it directly (we stop it in
            # order), and signalling its group reaches anything it started.
            process = await anyio.open_process(
                spec.argv,
                stdin=subprocess.DEVNULL,  # the terminal belongs to chute dev
                cwd=spec.cwd,
                env=spec.env,
                start_new_session=True,
            )
        except OSError as exc:
            raise DevError(f"{spec.name}: cannot start {spec.argv[0]!r}: {exc}") from exc
        running = _Running(spec, process)
        self._running.append(running)
        self.say(f"started {spec.name} (pid {process.pid}): {_display(spec.argv)}")
        assert process.stdout is not None
        assert process.stderr is not None
        tg.start_soon(self._pump, spec.name, process.stdout)
        tg.start_soon(self._pump, spec.name, process.stderr)
        tg.start_soon(self._watch_exit, running)

    async def _pump(self, name: str, stream: anyio.abc.ByteReceiveStream) -> None:
        self._pumps += 1
        try:
            await self._copy_lines(name, stream)
        finally:
            self._pumps -= 1
            if self._pumps == 0:
                self._pumps_done.set()

    async def _copy_lines(self, name: str, stream: anyio.abc.ByteReceiveStream) -> None:
        pending = ""
        async for chunk in TextReceiveStream(stream, errors="replace"):
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                self.sink(name, line.rstrip("\r"))
            while len(pending) > MAX_LINE:
                self.sink(name, pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
        if pending:
            self.sink(name, pending)

    async def _watch_exit(self, running: _Running) -> None:
        running.returncode = await running.process.wait()
        running.exited.set()
        # Whatever it started dies with it: no orphans.
        _signal_group(running.process.pid, signal.SIGKILL)
        if not self._shutting_down:
            reason = f"{running.spec.name} exited unexpectedly {_describe(running.returncode)}"
            if running.spec.hint and not self.ready.is_set():
                reason += f" ({running.spec.hint})"
            self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
            self.say(f"error: {reason}; stopping everything")
        self._stop.set()

    async def _watch_ready(self) -> None:
        pending = {"gateway": f"{self.plan.gateway_url}/healthz"}
        for api in self.plan.apis:
            pending[api.name] = f"http://127.0.0.1:{api.admin_port}/healthz"
        started = last_note = time.monotonic()
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for name, url in list(pending.items()):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url)).status_code == 200:
                            del pending[name]
                if not pending:
                    break
                if time.monotonic() - last_note > 15:
                    last_note = time.monotonic()
                    self.say(
                        f"still waiting after {time.monotonic() - started:.0f} s for: "
                        + ", ".join(self._waiting_for(name) for name in pending)
                    )
                await anyio.sleep(0.1)
        self.say(f"ready: gateway on {self.plan.gateway_url}")
        self.say(f"  dashboard: {self.plan.gateway_url}/ui/")
        for api in self.plan.apis:
            self.say(
                f"  {api.name}: POST {self.plan.gateway_url}{api.endpoint}, "
                f"GET {self.plan.gateway_url}{api.endpoint}/<id>"
            )
        self.ready.set()

    def _waiting_for(self, name: str) -> str:
        if name == "gateway":
            return f"the gateway ({self.plan.gateway_url}/healthz)"
        port = next(api.port for api in self.plan.apis if api.name == name)
        return f"{name}'s readiness probe (is the container listening on CORTEX_PORT={port}?)"

    async def _shutdown(self) -> None:
        self._shutting_down = True
        self.say("stopping")
        for roles in (("gateway", "dequeuer"), ("container", "proxy")):
            await self._terminate([r for r in self._running if r.spec.role in roles])
        for running in self._running:
            _signal_group(running.process.pid, signal.SIGKILL)
        self._remove_pids()
        if self._failure is None:
            self.say("stopped")
        else:
            self.say(f"stopped after an error: {self._failure}")

    async def _terminate(self, group: list[_Running]) -> None:
        alive = [r for r in group if not r.exited.is_set()]
        for running in alive:
            _signal_group(running.process.pid, signal.SIGTERM)

        async def wait(running: _Running) -> None:
            with anyio.move_on_after(running.spec.grace):
                await running.exited.wait()
            if not running.exited.is_set():
                self.say(
                    f"{running.spec.name} did not stop within {running.spec.grace:g} s: killing it"
                )
                _signal_group(running.process.pid, signal.SIGKILL)
                await running.exited.wait()
            elif running.returncode not in (0, -signal.SIGTERM):
                self.say(f"{running.spec.name} stopped {_describe(running.returncode)}")

        async with anyio.create_task_group() as tg:
            for running in alive:
                tg.start_soon(wait, running)

    def take_lock(self) -> None:
        """Claim the state directory (raises DevError if another chute dev holds it). :meth:`run`
        does it too; :func:`supervise` does it first, so the error is a plain one."""
        if self._lock is not None:
            return
        self.plan.state_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.plan.state_dir / "dev.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DevError(
                f"another chute dev is running with the state directory {self.plan.state_dir}; "
                "stop it or pass a different --state-dir"
            ) from None
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _write_pids(self) -> None:
        info = {
            "pid": os.getpid(),
            "gateway_url": self.plan.gateway_url,
            "queue_url": self.plan.queue_url,
            "store_url": self.plan.store_url,
            "state_dir": str(self.plan.state_dir),
            "processes": [
                {"name": r.spec.name, "role": r.spec.role, "pid": r.process.pid}
                for r in self._running
            ],
            "apis": self.plan.apis,
        }
        tmp = self.plan.pids_file.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(info))
        tmp.replace(self.plan.pids_file)

    def _remove_pids(self) -> None:
        self.plan.pids_file.unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _describe(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"on signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"on signal {-returncode}"
    return f"with code {returncode}"


def _display(argv: Sequence[str]) -> str:
    return " ".join(a if a and " " not in a else repr(a) for a in argv)


async def supervise(
    supervisor: Supervisor, task: Callable[[], Awaitable[None]] | None = None
) -> int:
    """Run ``supervisor`` until Ctrl-C or SIGTERM (exit 0) or until a process exits (exit 1).

    ``task``, if given, runs once everything is ready; the run stops when it returns. A second
    Ctrl-C kills every process at once.
    """

    async def on_signals(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if supervisor.stopping:
                    supervisor.say("second signal: killing everything")
                    supervisor.kill()
                else:
                    supervisor.say(f"received {signal.Signals(signum).name}")
                    supervisor.request_stop()

    async def then_stop(task: Callable[[], Awaitable[None]]) -> None:
        try:
            if await supervisor.wait_ready():
                await task()
        finally:
            supervisor.request_stop()

    supervisor.take_lock()  # outside the task group: a second chute dev gets one clear line
    async with anyio.create_task_group() as tg:
        await tg.start(on_signals)  # before any child exists, so none is left behind
        if task is not None:
            tg.start_soon(then_stop, task)
        code = await supervisor.run()
        tg.cancel_scope.cancel()
    return code


async def serve(dev: DevPlan) -> int:
    """``chute dev``: run ``dev`` with every process's output on stdout, prefixed by name."""
    supervisor = Supervisor(dev, PrefixPrinter([p.name for p in dev.processes]))

    async def hint() -> None:
        supervisor.say("press Ctrl-C to stop")
        await anyio.sleep_forever()

    return await supervise(supervisor, hint)
