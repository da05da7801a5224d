"""Processes of a benchmark: starting them, and what they cost (CPU, memory, Redis commands)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


@dataclass
class Proc:
    """A process the harness started (or found, like redis-server); ``tree`` sums its
    descendants too (Celery's prefork pool)."""

    name: str
    pid: int
    popen: subprocess.Popen[bytes] | None = None
    tree: bool = False
    #: Read CPU from each thread's ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds) instead
    #: of the 10 ms clock ticks of ``/proc/<pid>/stat``: for redis-server, whose few µs per
    #: request add up to only a few ticks in a flood. Its threads live as long as it does.
    precise: bool = False

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)] if self.tree else [root]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        """User + system CPU seconds so far."""
        if self.precise:
            with contextlib.suppress(OSError, ValueError):
                return (
                    sum(
                        int(stat.read_text().split()[0])
                        for stat in Path(f"/proc/{self.pid}/task").glob("*/schedstat")
                    )
                    / 1e9
                )
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_mib(self) -> float:
        return sum(p.memory_info().rss for p in self.processes()) / 2**20

    def peak_rss_mib(self) -> float:
        """Peak RSS (VmHWM) since start or since :meth:`reset_peak`."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux: ``5`` into clear_refs), so that a
        scenario's peak is its own."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class Group(Proc):
    """Several processes in one role (a fleet's gateways, its dequeuers): CPU summed, memory
    the largest member's (each process's own peak is what a pod's limit is set against)."""

    def __init__(self, name: str, members: list[Proc]) -> None:
        super().__init__(name, members[0].pid)
        self.members = members

    def processes(self) -> list[psutil.Process]:
        return [p for m in self.members for p in m.processes()]

    def rss_mib(self) -> float:
        return max(m.rss_mib() for m in self.members)

    def peak_rss_mib(self) -> float:
        return max(m.peak_rss_mib() for m in self.members)

    def reset_peak(self) -> None:
        for m in self.members:
            m.reset_peak()

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def start(name: str, args: list[str], logs: Path, *, tree: bool = False, **kwargs: Any) -> Proc:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    env = {**os.environ, "CHUTE_LOG_LEVEL": "WARNING", **kwargs.pop("env", {})}
    popen = subprocess.Popen(args, stdout=log, stderr=log, env=env, **kwargs)
    return Proc(name, popen.pid, popen, tree)


class RedisStats:
    """Redis-server's pid and command counters (``INFO commandstats``), for one server."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url.split("?")[0])
        self.pid = int(self.client.info("server")["process_id"])

    def commands(self) -> dict[str, int]:
        stats = self.client.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@dataclass
class Measurement:
    seconds: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)


class Meter:
    """Brackets one scenario: CPU of each process and Redis commands between start and stop.

    A system calls :meth:`stop` as soon as its last request is done, before the harness reads
    the latencies back, so that reading them is not billed to the system.
    """

    def __init__(self, procs: dict[str, Proc], redis: RedisStats | None) -> None:
        self.procs = procs
        self.redis = redis
        self.result: Measurement | None = None

    def _cpu(self) -> dict[str, float]:
        return {role: p.cpu() for role, p in self.procs.items()}

    def start(self) -> None:
        self.result = None
        self._t0 = time.perf_counter()
        self._cpu0 = self._cpu()
        self._cmd0 = self.redis.commands() if self.redis else {}

    def stop(self) -> Measurement:
        if self.result is None:
            cpu = self._cpu()
            cmds: dict[str, int] = {}
            if self.redis is not None:
                after = self.redis.commands()
                for name, calls in after.items():
                    delta = calls - self._cmd0.get(name, 0)
                    if name == "info":
                        delta -= 1  # the harness's own INFO at start
                    if delta > 0:
                        cmds[name] = delta
            self.result = Measurement(
                time.perf_counter() - self._t0,
                {role: cpu[role] - self._cpu0[role] for role in cpu},
                cmds,
            )
        return self.result


Stopper = Callable[[], Measurement]
