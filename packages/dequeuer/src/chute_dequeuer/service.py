"""One dequeuer process, assembled: backends, readiness, admin server, workers, shutdown."""

from __future__ import annotations

import logging

import anyio

from chute.registry import open_queue, open_store
from chute.webhooks import WebhookSender
from chute_dequeuer.admin import AdminServer
from chute_dequeuer.container import ContainerClient
from chute_dequeuer.metrics import Metrics
from chute_dequeuer.probes import Readiness, probes_for
from chute_dequeuer.retry import Outage
from chute_dequeuer.settings import Settings
from chute_dequeuer.shutdown import Shutdown
from chute_dequeuer.worker import Dispatcher

log = logging.getLogger("chute_dequeuer")

#: At shutdown, how long webhook deliveries still retrying may go on.
WEBHOOK_CLOSE_TIMEOUT = 5.0


async def serve(settings: Settings, *, admin_host: str = "0.0.0.0") -> int:
    """Run until SIGTERM/SIGINT, then drain within the grace period; return the exit code."""
    shutdown = Shutdown()
    metrics = Metrics()
    readiness = Readiness(probes_for(settings.api, settings.user_port))
    readiness.subscribe(lambda ready: metrics.ready.set(1 if ready else 0))
    admin = AdminServer(readiness, metrics, host=admin_host, port=settings.admin_port)
    # Before anything else runs, so a taken port fails the start with a plain OSError.
    await admin.start()
    try:
        queue = open_queue(settings.queue_url)
        store = open_store(settings.store_url)
    except BaseException:
        await admin.stop()
        raise
    try:
        async with (
            ContainerClient(
                settings.user_port,
                max_connections=settings.workers,
                connect_timeout=settings.connect_timeout,
                max_result_size=settings.max_result_size,
                any_content_type=settings.api.results.content_type == "any",
            ) as container,
            WebhookSender(
                retry_for=settings.webhook_retry_for,
                close_timeout=WEBHOOK_CLOSE_TIMEOUT,
                observe=lambda outcome: metrics.webhooks.labels(outcome=outcome).inc(),
            ) as webhooks,
            anyio.create_task_group() as tg,
        ):
            await tg.start(shutdown.watch_signals)
            dispatcher = Dispatcher(
                api=settings.api,
                queue=queue,
                store=store,
                container=container,
                readiness=readiness,
                metrics=metrics,
                outage=Outage(),
                workers=settings.workers,
                lease=settings.lease,
                webhooks=webhooks,
            )
            tg.start_soon(readiness.run)
            tg.start_soon(dispatcher.run)
            log.info(
                "dequeuer started",
                extra={
                    "api": settings.api_name,
                    "user_port": settings.user_port,
                    "workers": settings.workers,
                    "admin_port": admin.port,
                    "lease": settings.lease,
                    "probes": [spec.target for spec in readiness.specs],
                },
            )
            await shutdown.requested.wait()

            dispatcher.stop_receiving()
            log.info(
                "draining",
                extra={"in_flight": dispatcher.in_flight, "grace_period": settings.grace_period},
            )
            tg.start_soon(_abort_when_hurried, shutdown, dispatcher)
            with anyio.move_on_after(settings.grace_period):
                await dispatcher.finished.wait()
            dispatcher.abort()  # whatever is left goes back to the queue, visible at once
            await dispatcher.finished.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await admin.stop()
            await queue.aclose()
            await store.aclose()
    log.info("shutdown complete")
    return 0


async def _abort_when_hurried(shutdown: Shutdown, dispatcher: Dispatcher) -> None:
    await shutdown.hurried.wait()
    dispatcher.abort()
