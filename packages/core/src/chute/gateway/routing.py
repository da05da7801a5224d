"""Path → route for the gateway, with no framework: two dict lookups per request.

Routes, as Cortex's Istio VirtualService and gateway laid them out:

* ``<endpoint>`` and ``<endpoint>/``: the API's collection (``POST`` submits);
* ``<endpoint>/<id>``: one request (``GET`` reads it);
* ``/healthz``, ``/metrics``, ``/openapi.json``: the gateway's own, which no API may shadow.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from chute.config import API
from chute.errors import ConfigError


class Kind(enum.Enum):
    SUBMIT = "submit"
    RESULT = "result"
    HEALTH = "health"
    METRICS = "metrics"
    OPENAPI = "openapi"


#: The gateway's own paths: kind and the methods each accepts.
OWN_ROUTES: dict[str, Kind] = {
    "/healthz": Kind.HEALTH,
    "/metrics": Kind.METRICS,
    "/openapi.json": Kind.OPENAPI,
}

#: Methods each kind of route accepts (anything else is 405 with an ``Allow`` header).
METHODS: dict[Kind, tuple[str, ...]] = {
    Kind.SUBMIT: ("POST",),
    Kind.RESULT: ("GET",),
    Kind.HEALTH: ("GET",),
    Kind.METRICS: ("GET",),
    Kind.OPENAPI: ("GET",),
}


class Route(NamedTuple):
    kind: Kind
    api: API | None = None
    request_id: str = ""


class Router:
    """Finds the route for a path. Built once from the API list; rejects clashing endpoints."""

    def __init__(self, apis: Sequence[API]) -> None:
        self.by_endpoint: dict[str, API] = {}
        for api in apis:
            endpoint = api.endpoint
            if endpoint in OWN_ROUTES:
                raise ConfigError(
                    f"API {api.name!r}: endpoint {endpoint} is reserved by the gateway "
                    f"(reserved: {', '.join(OWN_ROUTES)}); set networking.endpoint"
                )
            other = self.by_endpoint.get(endpoint)
            if other is not None:
                raise ConfigError(
                    f"APIs {other.name!r} and {api.name!r} both use endpoint {endpoint}"
                )
            self.by_endpoint[endpoint] = api

    def match(self, path: str) -> Route | None:
        """The route for ``path``, or None when no API or gateway route has it."""
        own = OWN_ROUTES.get(path)
        if own is not None:
            return Route(own)
        # "/a/" and "/a" are the same collection; "/" stays "/" (an API at the root).
        trimmed = path.rstrip("/") or "/"
        api = self.by_endpoint.get(trimmed)
        if api is not None:
            return Route(Kind.SUBMIT, api)
        prefix, slash, request_id = trimmed.rpartition("/")
        if slash and request_id:
            api = self.by_endpoint.get(prefix or "/")
            if api is not None:
                return Route(Kind.RESULT, api, request_id)
        return None
