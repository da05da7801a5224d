"""The admin server (Cortex's port 15000): ``GET /healthz`` and ``GET /metrics``.

``/healthz`` answers ``200 healthy`` only while every readiness probe passes and ``503
unhealthy`` otherwise, so the dequeuer container's own Kubernetes readiness probe (pointed
here) makes the pod ready exactly when the user's container is.
"""

from __future__ import annotations

import logging

from aiohttp import web

from chute_dequeuer.metrics import CONTENT_TYPE, Metrics
from chute_dequeuer.probes import Readiness

log = logging.getLogger("chute_dequeuer.admin")


class AdminServer:
    """Serves ``/healthz`` and ``/metrics``; ``port=0`` binds a free port (see :attr:`port`)."""

    def __init__(self, readiness: Readiness, metrics: Metrics, *, host: str, port: int) -> None:
        self.readiness = readiness
        self.metrics = metrics
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("admin server listening on %s:%d", self.host, self.port, extra={"port": self.port})

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.readiness.ready:
            return web.Response(text="healthy")
        return web.Response(status=503, text="unhealthy")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
