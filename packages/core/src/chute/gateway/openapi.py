"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the API list.

Schemas come from the msgspec structs the gateway really encodes
(``msgspec.json.schema_components``), so the document cannot drift from the wire format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from chute._version import __version__
from chute.config import API
from chute.gateway.responses import ERROR_TYPES, HealthResponse
from chute.protocol import (
    MAX_ID_LENGTH,
    ErrorResponse,
    ResultResponse,
    Status,
    SubmitResponse,
)

_REF = "#/components/schemas/{name}"
_TIMESTAMPS = ("timestamp", "created_at", "started_at", "finished_at")
#: The request id's syntax, as ``chute.protocol.validate_request_id`` checks it.
REQUEST_ID_PATTERN = f"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_ID_LENGTH - 1}}}$"


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _operation_id(verb: str, api: API) -> str:
    return f"{verb}_" + re.sub(r"[^A-Za-z0-9_]", "_", api.name)


def openapi_document(apis: Sequence[API], *, max_body_size: int) -> dict[str, Any]:
    """Describe every route of a gateway serving ``apis``."""
    (submit, result, error, health), schemas = msgspec.json.schema_components(
        [SubmitResponse, ResultResponse, ErrorResponse, HealthResponse], ref_template=_REF
    )
    properties = schemas["ResultResponse"]["properties"]
    properties["status"]["enum"] = [s.value for s in Status]
    for name in _TIMESTAMPS:
        properties[name]["format"] = "date-time"

    def errors(*codes: int) -> dict[str, Any]:
        return {str(code): _json(error, ERROR_TYPES[code][1]) for code in codes}

    paths: dict[str, Any] = {}
    for api in apis:
        base = api.endpoint.rstrip("/")
        paths[api.endpoint] = {
            "post": {
                "operationId": _operation_id("submit", api),
                "summary": f"Submit a request to {api.name}",
                "description": (
                    "Stores the body (any content type, streamed, at most "
                    f"{max_body_size} bytes), its Content-Type and headers, queues the request "
                    f"and answers its id at once. `{api.endpoint.rstrip('/')}/` is the same route."
                ),
                "tags": [api.name],
                "requestBody": {
                    "required": False,
                    "content": {"*/*": {"schema": {}}},
                },
                "responses": {
                    "200": _json(submit, "Queued; poll the id for the result."),
                    **errors(400, 413, 415, 500, 503),
                },
            }
        }
        paths[f"{base}/{{request_id}}"] = {
            "get": {
                "operationId": _operation_id("get", api),
                "summary": f"Read a request of {api.name}",
                "description": (
                    "Cortex's `id` and `status`, plus `result` and `timestamp` once completed, "
                    "plus chute's `created_at`, `started_at`, `finished_at`, `attempts` and, "
                    "for a failed request, `error`."
                ),
                "tags": [api.name],
                "parameters": [
                    {
                        "name": "request_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
                    }
                ],
                "responses": {
                    "200": _json(result, "The request's status (and result once completed)."),
                    **errors(404, 500, 503),
                },
            }
        }
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Readiness: the queue and the store answer",
            "responses": {"200": _json(health, "Both backends answered."), **errors(503)},
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chute gateway",
            "version": __version__,
            "description": "Async APIs on Cortex's protocol: submit a request, poll its result.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
