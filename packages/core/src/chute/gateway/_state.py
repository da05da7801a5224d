"""What every route of the gateway reads: the APIs, the backends (opened on first need and
again after an outage), metrics, the shared watch and webhook sender. The routes
(``_submit``, ``_results``, ``_admin``) are mixins over :class:`GatewayState`;
``chute.gateway._app`` assembles them."""

from __future__ import annotations

from typing import Literal

import anyio
import anyio.abc

from chute.backends.base import Joint, Queue, Store
from chute.config import API
from chute.gateway._auth import KeyRing
from chute.gateway._metrics import GatewayMetrics
from chute.gateway._watch import Watcher
from chute.protocol import RequestRecord
from chute.registry import open_queue, open_store
from chute.webhooks import WebhookSender

#: Seconds /healthz waits for the backends before calling them down.
HEALTH_TIMEOUT = 2.0


class GatewayState:
    """The state the routes share; :class:`chute.gateway._app.Gateway` sets it up."""

    apis: list[API]
    queue_url: str
    store_url: str
    max_body_size: int
    max_header_size: int
    body_idle_timeout: float
    body_timeout: float
    retention: float
    settle_timeout: float
    global_keys: KeyRing
    protect_admin: bool
    metrics: GatewayMetrics
    openapi: bytes
    queue: Queue | None
    store: Store | None
    watcher: Watcher
    webhooks: WebhookSender | None
    startup_error: BaseException | None
    _suspect: bool
    _background: anyio.abc.TaskGroup | None
    _unsettled: dict[tuple[str, str], RequestRecord]
    _keys: dict[str, KeyRing]
    _queue_deadlines: dict[str, float | None]
    _joint: Joint | Literal[False] | None
    _by_name: dict[str, API]
    _open_lock: anyio.Lock

    async def _open(self, role: str) -> None:
        async with self._open_lock:
            if role == "queue" and self.queue is None:
                self.queue = await anyio.to_thread.run_sync(open_queue, self.queue_url)
            elif role == "store" and self.store is None:
                self.store = await anyio.to_thread.run_sync(open_store, self.store_url)

    async def _queue(self) -> Queue:
        if self.queue is None:
            await self._open("queue")
        assert self.queue is not None
        return self.queue

    async def _store(self) -> Store:
        if self.store is None:
            await self._open("store")
        assert self.store is not None
        return self.store

    async def _joint_path(self, store: Store) -> Joint | None:
        """The store's :class:`Joint` with the queue, if it has one (asked once)."""
        if self._joint is None:
            self._joint = store.joint(await self._queue()) or False
        return None if self._joint is False else self._joint
