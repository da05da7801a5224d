"""What the gateway answers: the response value its handlers return, its own wire structs and
the HTTP error that becomes ``{"error": {"type", "message"}}``."""

from __future__ import annotations

from typing import Literal, NamedTuple

import msgspec

from chute.protocol import ErrorBody, ErrorResponse

JSON = b"application/json"

encoder = msgspec.json.Encoder()


class HealthResponse(msgspec.Struct, frozen=True):
    """``GET /healthz`` while the queue and the store answer."""

    status: Literal["ok"] = "ok"


class QueueResponse(msgspec.Struct, frozen=True):
    """``GET /queues/<api-name>``: the API's queue depth (KEDA's metrics-api scaler reads it)."""

    api: str
    queued: int
    in_flight: int
    dead: int


class Response(NamedTuple):
    """A complete response; the gateway sends every response in one place, whole."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


class HTTPError(Exception):
    """Raised by a handler to answer an error; ``type`` is the machine-readable reason."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        body = encoder.encode(ErrorResponse(ErrorBody(type=self.type, message=self.message)))
        return Response(self.status, body, JSON, self.headers)


#: The error ``type`` the gateway uses for each status it answers, as documented in
#: docs/gateway.md and in ``/openapi.json``.
ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: (
        "bad_request",
        "The request is malformed (an invalid Content-Length, control header or ?wait=).",
    ),
    401: ("unauthorized", "An API key is required: `Authorization: Bearer <key>`."),
    404: ("not_found", "No such API, or no such request id (unknown, malformed or expired)."),
    405: ("method_not_allowed", "The route exists but not for this method; see Allow."),
    408: (
        "request_timeout",
        "The body did not arrive in time (an idle gap or the whole body took too long); the "
        "connection is closed and nothing is queued.",
    ),
    409: (
        "conflict",
        "The request is already finished (DELETE), has no result yet (GET …/result), or the "
        "Idempotency-Key was used with another body.",
    ),
    413: ("payload_too_large", "The body is larger than the gateway's or the store's limit."),
    415: ("unsupported_media_type", "The Content-Type header is not a valid media type."),
    431: (
        "request_header_fields_too_large",
        "The request's headers are larger than the gateway's limit (the container's server "
        "would refuse them); nothing is queued.",
    ),
    500: ("internal_error", "An unexpected error; it is logged by the gateway."),
    501: (
        "not_implemented",
        "The queue backend cannot do this: it declares it cannot count its messages.",
    ),
    503: ("backend_unavailable", "The queue or the store cannot be reached; retry later."),
}


def error(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> HTTPError:
    """The gateway's error for ``status``, with its documented ``type``."""
    return HTTPError(status, ERROR_TYPES[status][0], message, headers)
