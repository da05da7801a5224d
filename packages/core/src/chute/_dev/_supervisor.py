"""Running a :class:`~chute._dev.DevPlan`: the :class:`Supervisor` starts every process, prints
their output with names in front, says when all is ready and stops everything in order; plus
the image builds that come first and the signal handling of :func:`supervise`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

import anyio
import anyio.abc
import httpx
import msgspec
from anyio.streams.text import TextReceiveStream

from chute._container_runtime import Runtime, check_engine
from chute._dev._spec import DevPlan, ProcessSpec
from chute.errors import DevError

#: Receives each output line: (process name, line without its newline).
LineSink = Callable[[str, str], None]

#: The supervisor's own name in the output.
SUPERVISOR = "chute dev"
#: A line longer than this is passed on in pieces rather than buffered whole.
MAX_LINE = 64 * 1024


def build_images(runtime: Runtime, builds: Sequence[Sequence[str]]) -> None:
    """Check the engine, then run each image build with its output shown; raise
    :class:`DevError` naming the first that fails."""
    check_engine(runtime)
    for argv in builds:
        print(f"{SUPERVISOR}: {_display(argv)}", file=sys.stderr, flush=True)
        if subprocess.run(list(argv), check=False).returncode != 0:
            raise DevError(f"building the image failed: {_display(argv)}")


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
        # Processes with no health route (the Cortex-address proxy): ready once they listen,
        # or a container's first call through them could find nobody there.
        listening = {s.name: s.listens_on for s in self.plan.processes if s.listens_on}
        started = last_note = time.monotonic()
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending or listening:
                for name, url in list(pending.items()):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(url)).status_code == 200:
                            del pending[name]
                for name, port in list(listening.items()):
                    with contextlib.suppress(OSError):
                        stream = await anyio.connect_tcp("127.0.0.1", port)
                        await stream.aclose()
                        del listening[name]
                if not pending and not listening:
                    break
                if time.monotonic() - last_note > 15:
                    last_note = time.monotonic()
                    self.say(
                        f"still waiting after {time.monotonic() - started:.0f} s for: "
                        + ", ".join(
                            [self._waiting_for(name) for name in pending]
                            + [f"{name} (port {port})" for name, port in listening.items()]
                        )
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
