"""Find a running ``chute dev`` from its state directory, so that ``chute submit``, ``get``,
``cancel`` and ``dead-letter`` reach its gateway and backends without flags.

``chute dev`` writes ``<state dir>/dev.json`` once its processes started (gateway URL, backend
URLs, its own pid) and removes it when it stops. A command looks for ``.chute/dev.json`` in the
current directory and its parents, and trusts it only while that pid is alive.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

#: chute dev's default state directory (``--state-dir``), relative to where it runs.
STATE_DIR = ".chute"


class RunningDev(msgspec.Struct, frozen=True):
    pid: int
    gateway_url: str
    queue_url: str | None = None
    store_url: str | None = None
    state_dir: str | None = None


def running_dev(start: Path | None = None) -> RunningDev | None:
    """The ``chute dev`` running with ``.chute`` in ``start`` (default: the current directory)
    or one of its parents, if any."""
    here = (start or Path.cwd()).resolve()
    for base in [here, *here.parents]:
        info = read_dev_json(base / STATE_DIR / "dev.json")
        if info is not None:
            return info
    return None


def read_dev_json(path: Path) -> RunningDev | None:
    """What a live ``chute dev`` wrote to ``path``; None if absent, unreadable or stale."""
    try:
        data: Any = msgspec.json.decode(path.read_bytes())
        info = msgspec.convert(data, RunningDev)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return info if _alive(info.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gateway_url(explicit: str | None) -> str | None:
    """The gateway for a command: ``--gateway``, else ``$CHUTE_GATEWAY_URL``, else a running
    ``chute dev``'s; None leaves the rest to :func:`chute.client.gateway_url` (Cortex's client
    config file, then http://127.0.0.1:8888)."""
    if explicit or os.environ.get("CHUTE_GATEWAY_URL"):
        return explicit
    running = running_dev()
    return running.gateway_url if running is not None else None
