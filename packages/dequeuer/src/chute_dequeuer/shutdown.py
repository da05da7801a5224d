"""Signals: SIGTERM or SIGINT starts a graceful shutdown; a second one cuts the grace short.

What a shutdown does (``service.serve``): stop receiving at once, let requests in flight finish
within the grace period, give the rest back to the queue (visible again at once), close the
backends, exit 0. SIGKILL cannot be caught and needs nothing: a killed dequeuer's leases lapse
and its requests are delivered again.
"""

from __future__ import annotations

import logging
import signal

import anyio
from anyio.abc import TaskStatus

log = logging.getLogger("chute_dequeuer.shutdown")


class Shutdown:
    """Turns signals into two events: ``requested`` (drain) and ``hurried`` (stop now)."""

    def __init__(self) -> None:
        self.requested = anyio.Event()
        self.hurried = anyio.Event()

    async def watch_signals(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Handle SIGTERM/SIGINT until cancelled (``task_status`` reports once installed)."""
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.requested.is_set():
                    log.info("received %s, shutting down gracefully", name)
                    self.requested.set()
                else:
                    log.warning("received %s again, giving in-flight requests back now", name)
                    self.hurried.set()
