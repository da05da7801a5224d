"""``--watch``: print a table whenever it changes until Ctrl-C (``chute status``, and a
plugin's commands: re-exported by :mod:`chute.cli`)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

__all__ = ["watch"]


def watch(
    render: Callable[[], str],
    *,
    interval: float = 2.0,
    write: Callable[[str], None] | None = None,
) -> None:
    """Print ``render()`` (with a ``-- HH:MM:SS`` line) now and again whenever it changes,
    every ``interval`` seconds, until Ctrl-C, which ends the watch normally.

    Ctrl-C is handled here rather than left to Python's default handler: it is honoured at
    once while the watch sleeps, and after the ``render()`` in flight otherwise (a
    KeyboardInterrupt raised inside an HTTP client could leave its pool's lock held, and
    closing the client would then wait forever); and a SIGINT that the parent process ignored
    (an ignored signal is inherited: a command started in the background by a shell without
    job control) still ends the watch."""
    out = write if write is not None else _stdout
    ctrl_c = _CtrlC()
    previous = signal.signal(signal.SIGINT, ctrl_c.handle)
    shown = None
    try:
        while not ctrl_c.pressed():
            ctrl_c.rendering = True
            try:
                table = render()
            finally:
                ctrl_c.rendering = False
            if ctrl_c.pressed():  # during render(): end now, quietly
                break
            if table != shown:
                out(f"-- {time.strftime('%H:%M:%S')}\n{table}")
                shown = table
            time.sleep(interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    finally:
        signal.signal(signal.SIGINT, previous)


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class _CtrlC:
    """SIGINT during :func:`watch`: noted while ``render()`` runs, raised otherwise."""

    def __init__(self) -> None:
        self._pressed = False
        self.rendering = False

    def pressed(self) -> bool:
        return self._pressed

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self._pressed = True
        if not self.rendering:
            raise KeyboardInterrupt
