"""Readiness: the containers' readiness probes, evaluated the way kubelet evaluates them.

For an Async API the probes are not put on the Kubernetes containers; the dequeuer runs them
itself and pulls work only while every one passes (Cortex's ``probes.go``). Semantics follow
kubelet: a probe starts failing; after ``initial_delay_seconds`` it runs every
``period_seconds`` with a ``timeout_seconds`` limit; ``success_threshold`` consecutive
successes make it pass and ``failure_threshold`` consecutive failures make it fail.
``http_get`` succeeds on a 200-399 answer to ``GET http://127.0.0.1:<port><path>`` sent with
``User-Agent: kube-probe/``; ``tcp_socket`` succeeds when a connection opens.

Like Cortex, a TCP probe on the user port is added when no TCP probe targets it already (an
HTTP probe on that port does not count). Cortex's runs after 1 s and then every 1 s; chute's
starts at once and runs every 0.25 s, so a request waits at most a quarter of a second for a
freshly started container. A localhost connect costs microseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
import anyio
import msgspec

from chute.config import API, Probe

log = logging.getLogger("chute_dequeuer.probes")

USER_AGENT = "kube-probe/"
HOST = "127.0.0.1"
#: Timing of the TCP probe added on the user port (see the module docstring).
DEFAULT_PROBE_PERIOD = 0.25
DEFAULT_PROBE_TIMEOUT = 1.0


class ProbeSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One probe, with kubelet's timing fields in seconds."""

    name: str
    port: int
    path: str | None = None  # set for http_get, None for tcp_socket
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @property
    def target(self) -> str:
        if self.path is None:
            return f"tcp {HOST}:{self.port}"
        return f"GET http://{HOST}:{self.port}{self.path}"


def probes_for(api: API, user_port: int) -> list[ProbeSpec]:
    """Every container's readiness probe, plus the default TCP probe on the user port."""
    specs: list[ProbeSpec] = []
    for container in api.pod.containers:
        probe = container.readiness_probe
        if probe is None:
            continue
        if probe.http_get is not None:
            path = probe.http_get.path
            specs.append(_spec(container.name, probe, probe.http_get.port, "/" + path.lstrip("/")))
        elif probe.tcp_socket is not None:
            specs.append(_spec(container.name, probe, probe.tcp_socket.port, None))
    if not any(s.path is None and s.port == user_port for s in specs):
        specs.append(
            ProbeSpec(
                name="default:tcp",  # not a valid container name, so never a clash
                port=user_port,
                period=DEFAULT_PROBE_PERIOD,
                timeout=DEFAULT_PROBE_TIMEOUT,
                success_threshold=1,
                failure_threshold=1,
            )
        )
    return specs


def _spec(name: str, probe: Probe, port: int, path: str | None) -> ProbeSpec:
    return ProbeSpec(
        name=name,
        port=port,
        path=path,
        initial_delay=float(probe.initial_delay_seconds),
        period=float(probe.period_seconds),
        timeout=float(probe.timeout_seconds),
        success_threshold=probe.success_threshold,
        failure_threshold=probe.failure_threshold,
    )


class Readiness:
    """The combined state of every probe, and an event workers wait on while it fails."""

    def __init__(self, specs: list[ProbeSpec]) -> None:
        self.specs = specs
        self._healthy = {spec.name: False for spec in specs}
        self._ready_event = anyio.Event()
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def ready(self) -> bool:
        """True while every probe passes."""
        return all(self._healthy.values())

    def subscribe(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(ready)`` whenever the combined state flips."""
        self._listeners.append(listener)

    async def wait_ready(self) -> None:
        """Return once every probe passes (at once if they already do)."""
        while not self.ready:
            await self._ready_event.wait()

    def set_healthy(self, name: str, healthy: bool) -> None:
        """Record one probe's state; wake the waiters or notify listeners on a flip."""
        was_ready = self.ready
        self._healthy[name] = healthy
        now_ready = self.ready
        if now_ready == was_ready:
            return
        if now_ready:
            log.info("all readiness probes pass; pulling work")
            self._ready_event.set()
        else:
            log.warning("a readiness probe fails; pulling stops", extra={"probe": name})
            self._ready_event = anyio.Event()  # anyio events cannot be cleared: replace it
        for listener in self._listeners:
            listener(now_ready)

    async def run(self) -> None:
        """Run every probe until cancelled."""
        # A fresh connection per check, as kubelet makes: a pooled one would hide a server
        # that stopped accepting connections.
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with (
            aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
            ) as session,
            anyio.create_task_group() as tg,
        ):
            for spec in self.specs:
                tg.start_soon(self._run_one, spec, session)

    async def _run_one(self, spec: ProbeSpec, session: aiohttp.ClientSession) -> None:
        await anyio.sleep(spec.initial_delay)
        successes = failures = 0
        healthy = False
        while True:
            ok, detail = await check(spec, session)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
            if not healthy and successes >= spec.success_threshold:
                healthy = True
                log.info("probe passes", extra={"probe": spec.name, "target": spec.target})
                self.set_healthy(spec.name, True)
            elif healthy and failures >= spec.failure_threshold:
                healthy = False
                log.warning(
                    "probe fails",
                    extra={"probe": spec.name, "target": spec.target, "reason": detail},
                )
                self.set_healthy(spec.name, False)
            elif not ok:
                log.debug("probe check failed", extra={"probe": spec.name, "reason": detail})
            await anyio.sleep(spec.period)


async def check(spec: ProbeSpec, session: aiohttp.ClientSession) -> tuple[bool, str]:
    """Run one check of ``spec``: (passed, why not)."""
    try:
        with anyio.fail_after(spec.timeout):
            if spec.path is None:
                stream = await anyio.connect_tcp(HOST, spec.port)
                await stream.aclose()
                return True, ""
            url = f"http://{HOST}:{spec.port}{spec.path}"
            async with session.get(url, allow_redirects=False) as response:
                if 200 <= response.status < 400:
                    return True, ""
                return False, f"status code {response.status}"
    except TimeoutError:
        return False, f"timed out after {spec.timeout:g} s"
    except (OSError, aiohttp.ClientError) as exc:
        return False, str(exc) or type(exc).__name__
