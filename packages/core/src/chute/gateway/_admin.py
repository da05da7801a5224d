"""The gateway's own routes: ``/healthz``, ``/metrics``, ``/openapi.json`` and
``/queues/<api>`` (queue depth)."""

from __future__ import annotations

import anyio
import anyio.abc

from chute.backends.base import Queue
from chute.backends.urls import redact
from chute.errors import BackendUnavailable, ChuteError
from chute.gateway._body import Scope, _Receive
from chute.gateway._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from chute.gateway._responses import HealthResponse, QueueResponse, Response, encoder, error
from chute.gateway._routing import Route
from chute.gateway._state import HEALTH_TIMEOUT, GatewayState


class AdminRoutes(GatewayState):
    """The routes that are not an API's: health, metrics, OpenAPI, queue depth."""

    async def _health(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        waiting = f"the queue ({redact(self.queue_url)})"

        async def check() -> None:
            nonlocal waiting
            queue = await self._queue()
            await queue.ping()
            waiting = f"the store ({redact(self.store_url)})"
            store = await self._store()
            await store.ping()

        try:
            with anyio.fail_after(HEALTH_TIMEOUT):
                await check()
        except TimeoutError:
            raise BackendUnavailable(
                f"{waiting} did not answer within {HEALTH_TIMEOUT} s"
            ) from None
        except ChuteError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            raise BackendUnavailable(str(exc)) from exc
        return Response(200, encoder.encode(HealthResponse()))

    async def _metrics(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        try:
            queue: Queue | None = await self._queue()
        except BackendUnavailable:
            queue = None  # the scrape still answers, without queue depth
        self.metrics.watched_requests.set(self.watcher.watched)
        body = await self.metrics.render(queue)
        return Response(200, body, METRICS_CONTENT_TYPE.encode())

    async def _openapi(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        return Response(200, self.openapi)

    async def _queue_depth(self, scope: Scope, receive: _Receive, route: Route) -> Response:
        assert route.api is not None
        queue = await self._queue()
        if not queue.supports_depth:
            raise error(
                501,
                f"the queue of {route.api.name} ({type(queue).__name__}) cannot count its "
                "messages: no queue depth",
            )
        try:
            depth = await queue.depth(route.api.name)
        except BackendUnavailable:
            raise
        except ChuteError as exc:
            raise BackendUnavailable(str(exc)) from exc
        answer = QueueResponse(route.api.name, depth.queued, depth.in_flight, depth.dead)
        return Response(200, encoder.encode(answer))
