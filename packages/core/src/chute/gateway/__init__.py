"""The gateway: ``POST <endpoint>`` queues a request, ``GET <endpoint>/<id>`` reads it.

An ASGI application (:class:`Gateway`) served by uvicorn, hypercorn or granian
(:func:`serve`); ``chute gateway`` runs it. See docs/gateway.md.
"""

from chute.gateway._app import DEFAULT_MAX_BODY_SIZE, Gateway
from chute.gateway._server import serve

__all__ = ["DEFAULT_MAX_BODY_SIZE", "Gateway", "serve"]
