"""The operators' dashboard, served by the gateway at ``/ui/`` (see docs/dashboard.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from chute.gateway._dashboard.routes import PREFIX, Dashboard
from chute.gateway._routing import origin_path

if TYPE_CHECKING:
    from chute.gateway._app import Gateway

__all__ = ["PREFIX", "Dashboard", "with_dashboard"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def with_dashboard(gateway: Gateway, app: ASGIApp) -> ASGIApp:
    """``app`` (the gateway's HTTP handler) with ``/ui`` and everything under it answered by
    the dashboard instead (outside CORS: the dashboard is for its own origin only)."""
    dashboard = Dashboard(gateway)

    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path.startswith(PREFIX) or not path.startswith("/"):
            path = origin_path(path)
            if path == PREFIX or path.startswith(PREFIX + "/"):
                scope["path"] = path
                await dashboard(scope, receive, send)
                return
        await app(scope, receive, send)

    return serve
