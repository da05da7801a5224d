"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the API list.

Schemas come from the msgspec structs the gateway really encodes
(``msgspec.json.schema_components``), so the document cannot drift from the wire format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence, Set
from typing import Any

import msgspec

from chute._version import __version__
from chute._webhook_targets import url_pattern
from chute.config import API
from chute.gateway._controls import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY, MAX_TIMEOUT
from chute.gateway._responses import ERROR_TYPES, HealthResponse, QueueResponse
from chute.gateway._watch import MAX_WAIT
from chute.protocol import (
    EXECUTION_TIMEOUT_HEADER,
    MAX_ID_LENGTH,
    QUEUE_TIMEOUT_HEADER,
    RESULT_SUFFIX,
    WEBHOOK_HEADER,
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


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema,
    }


_SECONDS = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT}

#: The control headers of a submit (chute.gateway._controls); none reaches the container.
SUBMIT_HEADERS = [
    _header(
        IDEMPOTENCY_HEADER,
        "A repeat with the same key and body within the retention returns the first "
        "request's id and queues nothing; the same key with another body is 409.",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY,
            "pattern": "^[!-~](?:[ -~]*[!-~])?$",
        },
    ),
    _header(
        QUEUE_TIMEOUT_HEADER,
        "Seconds the request may wait in the queue; still queued after that, it becomes "
        "`expired` and never runs. Default: the API's `deadlines.queue`.",
        _SECONDS,
    ),
    _header(
        EXECUTION_TIMEOUT_HEADER,
        "Seconds the call to the container may take. Default: the API's `deadlines.execution`.",
        _SECONDS,
    ),
]


def _webhook_header(allowlist: Sequence[str], private_targets: bool) -> dict[str, Any]:
    """``X-Chute-Webhook``, for an API that takes per-request webhook URLs: its pattern
    accepts the URLs the allowlist does (chute._webhook_targets.matches)."""
    return _header(
        WEBHOOK_HEADER,
        "An http(s) URL that gets this request's webhook instead of the API's; it must be on "
        "the API's `webhook.request_urls` allowlist, and not a private address unless the API "
        "allows it.",
        {
            "type": "string",
            "format": "uri",
            "pattern": url_pattern(tuple(allowlist), private_targets=private_targets),
        },
    )


def openapi_document(
    apis: Sequence[API],
    *,
    max_body_size: int,
    secured: Set[str] = frozenset(),
    protect_admin: bool = False,
) -> dict[str, Any]:
    """Describe every route of a gateway serving ``apis``; ``secured`` names the APIs that
    need an API key, ``protect_admin`` says whether ``/metrics`` and ``/queues/*`` do."""
    (submit, result, error, health, queue), schemas = msgspec.json.schema_components(
        [SubmitResponse, ResultResponse, ErrorResponse, HealthResponse, QueueResponse],
        ref_template=_REF,
    )
    bearer: list[dict[str, list[str]]] = [{"apiKey": []}]
    properties = schemas["ResultResponse"]["properties"]
    properties["status"]["enum"] = [s.value for s in Status]
    for name in _TIMESTAMPS:
        properties[name]["format"] = "date-time"

    def errors(*codes: int) -> dict[str, Any]:
        return {str(code): _json(error, ERROR_TYPES[code][1]) for code in codes}

    def auth(operation: dict[str, Any], on: bool) -> dict[str, Any]:
        if on:
            operation["security"] = bearer
            operation["responses"].update(errors(401))
        return operation

    request_id = {
        "name": "request_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
    }
    paths: dict[str, Any] = {}
    for api in apis:
        base = api.endpoint.rstrip("/")
        keyed = api.name in secured
        paths[api.endpoint] = {
            "post": auth(
                {
                    "operationId": _operation_id("submit", api),
                    "summary": f"Submit a request to {api.name}",
                    "description": (
                        "Stores the body (any content type, streamed, at most "
                        f"{max_body_size} bytes), its Content-Type and headers, queues the request "
                        f"and answers its id at once. `{base}/` is the same route."
                    ),
                    "tags": [api.name],
                    "parameters": (
                        SUBMIT_HEADERS
                        if api.webhook is None or not api.webhook.request_urls
                        else [
                            *SUBMIT_HEADERS,
                            _webhook_header(api.webhook.request_urls, api.webhook.private_targets),
                        ]
                    ),
                    "requestBody": {
                        "required": False,
                        "content": {"*/*": {"schema": {}}},
                    },
                    "responses": {
                        "200": _json(submit, "Queued (or a repeat's first id); poll the id."),
                        **errors(400, 409, 413, 415, 500, 503),
                    },
                },
                keyed,
            )
        }
        paths[f"{base}/{{request_id}}"] = {
            "get": auth(
                {
                    "operationId": _operation_id("get", api),
                    "summary": f"Read a request of {api.name}",
                    "description": (
                        "Cortex's `id` and `status`, plus `result` and `timestamp` once completed, "
                        "plus chute's `created_at`, `started_at`, `finished_at`, `attempts` and, "
                        "for a failed request, `error`. With `?wait=SECONDS`, answers as soon as "
                        "the request is terminal, or as it is when the wait ends."
                    ),
                    "tags": [api.name],
                    "parameters": [
                        request_id,
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": "Long-poll: wait up to this many seconds for the end.",
                            "schema": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": MAX_WAIT,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(result, "The request's status (and result once completed)."),
                        **errors(400, 404, 500, 503),
                    },
                },
                keyed,
            ),
            "delete": auth(
                {
                    "operationId": _operation_id("cancel", api),
                    "summary": f"Cancel a request of {api.name}",
                    "description": (
                        "A queued request becomes `cancelled` and never runs; a running one is "
                        "cancelled too (its dequeuer closes the call). Cancelling a cancelled "
                        "request answers it again; a finished one is 409."
                    ),
                    "tags": [api.name],
                    "parameters": [request_id],
                    "responses": {
                        "200": _json(result, "The cancelled request."),
                        **errors(404, 409, 500, 503),
                    },
                },
                keyed,
            ),
        }
        paths[f"{base}/{{request_id}}{RESULT_SUFFIX}"] = {
            "get": auth(
                {
                    "operationId": _operation_id("result", api),
                    "summary": f"Read the result of a request of {api.name}",
                    "description": (
                        "A completed request's result as the container answered it, with its "
                        "Content-Type: JSON, or any other type on an API with "
                        "`results.content_type: any` (then `GET` gives `result_url` and "
                        "`result_type` instead of `result`). 409 while it has not completed."
                    ),
                    "tags": [api.name],
                    "parameters": [request_id],
                    "responses": {
                        "200": {
                            "description": "The result's bytes, with the container's type.",
                            "content": {"*/*": {"schema": {}}},
                        },
                        **errors(404, 409, 500, 503),
                    },
                },
                keyed,
            ),
        }
        paths[f"/queues/{api.name}"] = {
            "get": auth(
                {
                    "operationId": _operation_id("queue", api),
                    "summary": f"Queue depth of {api.name} (for KEDA's metrics-api scaler)",
                    "tags": ["gateway"],
                    "responses": {
                        "200": _json(queue, "Messages queued, leased and dead-lettered."),
                        **errors(500, 501, 503),
                    },
                },
                protect_admin,
            ),
        }
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "Readiness: the queue and the store answer",
            "responses": {"200": _json(health, "Both backends answered."), **errors(503)},
        }
    }
    paths["/metrics"] = {
        "get": auth(
            {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            },
            protect_admin,
        )
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
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
