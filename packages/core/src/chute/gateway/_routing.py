"""Path → route for the gateway, with no framework: two dict lookups per request.

Routes, as Cortex's Istio VirtualService and gateway laid them out:

* ``<endpoint>`` and ``<endpoint>/``: the API's collection (``POST`` submits);
* ``<endpoint>/<id>``: one request (``GET`` reads it, ``DELETE`` cancels it);
* ``<endpoint>/<id>/result``: its result's bytes, with their type (``GET``);
* ``/healthz``, ``/metrics``, ``/openapi.json`` and ``/queues/<api-name>`` (queue depth, for
  KEDA's metrics-api scaler): the gateway's own, which no API may shadow; so is ``/ui/…``,
  the dashboard, answered before routing (``chute.gateway._dashboard``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import NamedTuple

from chute.config import API
from chute.errors import ConfigError
from chute.protocol import RESULT_SUFFIX


class Kind(enum.Enum):
    SUBMIT = "submit"
    RESULT = "result"
    RESULT_BODY = "result_body"
    HEALTH = "health"
    METRICS = "metrics"
    OPENAPI = "openapi"
    QUEUE = "queue"


#: The gateway's own paths: kind and the methods each accepts.
OWN_ROUTES: dict[str, Kind] = {
    "/healthz": Kind.HEALTH,
    "/metrics": Kind.METRICS,
    "/openapi.json": Kind.OPENAPI,
}
#: Paths under this prefix are the gateway's too: ``/queues/<api-name>``.
QUEUES_PREFIX = "/queues"
#: The operators' dashboard (``chute.gateway._dashboard``) answers everything under it.
UI_PREFIX = "/ui"

#: Methods each kind of route accepts (anything else is 405 with an ``Allow`` header).
METHODS: dict[Kind, tuple[str, ...]] = {
    Kind.SUBMIT: ("POST",),
    Kind.RESULT: ("GET", "DELETE"),
    Kind.RESULT_BODY: ("GET",),
    Kind.HEALTH: ("GET",),
    Kind.METRICS: ("GET",),
    Kind.OPENAPI: ("GET",),
    Kind.QUEUE: ("GET",),
}


class Route(NamedTuple):
    kind: Kind
    api: API | None = None
    request_id: str = ""


class Router:
    """Finds the route for a path. Built once from the API list; rejects clashing endpoints."""

    def __init__(self, apis: Sequence[API]) -> None:
        self.by_endpoint: dict[str, API] = {}
        self.by_name: dict[str, API] = {api.name: api for api in apis}
        for api in apis:
            endpoint = api.endpoint
            if (
                endpoint in OWN_ROUTES
                or _under(endpoint, QUEUES_PREFIX)
                or _under(endpoint, UI_PREFIX)
            ):
                reserved = ", ".join([*OWN_ROUTES, f"{QUEUES_PREFIX}/…", f"{UI_PREFIX}/…"])
                raise ConfigError(
                    f"API {api.name!r}: endpoint {endpoint} is reserved by the gateway "
                    f"(reserved: {reserved}); set networking.endpoint"
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
        if _under(path, QUEUES_PREFIX):
            name = path[len(QUEUES_PREFIX) + 1 :].rstrip("/")
            api = self.by_name.get(name)
            return None if api is None else Route(Kind.QUEUE, api)
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
        if trimmed.endswith(RESULT_SUFFIX):  # <endpoint>/<id>/result (ids hold no "/")
            prefix, slash, request_id = trimmed[: -len(RESULT_SUFFIX)].rpartition("/")
            api = self.by_endpoint.get(prefix or "/") if slash and request_id else None
            if api is not None:
                return Route(Kind.RESULT_BODY, api, request_id)
        return None


#: The scheme and authority of an absolute-form request target (RFC 9112, section 3.2.2).
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def origin_path(path: str) -> str:
    """The path of a request target, also in absolute form: ``GET http://host/api/id`` is a
    request for ``/api/id`` (RFC 9112 says a server must accept it; some servers hand the app
    the whole URL as its path). The authority is ignored, as RFC 9112 allows for a server that
    is the only origin behind its port."""
    if path.startswith("/"):
        return path
    absolute = _ABSOLUTE.match(path)
    if absolute is None:
        return path
    return path[absolute.end() :] or "/"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")
