"""chute's exceptions: one root, four families.

Callers catch these and nothing else: backends translate their SDK's exceptions at the
boundary (``raise BackendUnavailable(...) from exc``), so no caller ever needs to know about
``redis.ConnectionError`` or ``botocore`` errors.
"""

from __future__ import annotations


class ChuteError(Exception):
    """The root of every error chute raises on purpose."""


# --- configuration -------------------------------------------------------------------------


class ConfigError(ChuteError):
    """A configuration file, URL or option is invalid."""


# --- plugins -------------------------------------------------------------------------------


class PluginError(ChuteError):
    """A plugin could not be loaded, or plugins disagree."""


class UnknownSchemeError(PluginError, ConfigError):
    """No installed plugin handles a backend URL's scheme."""


class DuplicateSchemeError(PluginError):
    """Two plugins claim the same URL scheme."""


# --- backends ------------------------------------------------------------------------------


class BackendError(ChuteError):
    """A queue or store operation failed."""


class BackendUnavailable(BackendError):
    """The backend could not be reached (down, restarting, network). Retrying may succeed."""


class NotFound(BackendError):
    """The request id is unknown, or its record has expired."""


class Conflict(BackendError):
    """A conditional write lost: the record changed since it was read, or already exists."""


class TransitionRejected(Conflict):
    """A status change is not allowed from the record's current state or attempt."""


class LeaseLost(BackendError):
    """The delivery's lease lapsed or was taken over; the message belongs to someone else now."""


class PayloadTooLarge(BackendError):
    """A payload is larger than the gateway's or the backend's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"payload exceeds the limit of {limit} bytes")
        self.limit = limit


class Unsupported(BackendError):
    """The backend does not offer an optional capability it was asked for (it declares the
    capability absent on its class, e.g. ``Store.supports_listing = False``)."""


# --- protocol ------------------------------------------------------------------------------


class ProtocolError(ChuteError):
    """A message on the wire does not follow the protocol (bad id, bad header, bad body)."""


class InvalidRequestId(ProtocolError):
    """A request id is malformed; it never reaches a storage key."""


class InvalidAPIName(ProtocolError, ConfigError):
    """An API name cannot be part of a storage key or queue name.

    Also a ConfigError: API names come from configuration, and callers that report bad
    configuration (``chute validate``, a dequeuer at startup) catch that.
    """


# --- talking to a gateway (chute.Client) ---------------------------------------------------


class GatewayError(ChuteError):
    """A call from :class:`chute.Client` to a gateway failed."""


class GatewayUnreachable(GatewayError):
    """The gateway could not be reached (connection refused, network error, timeout)."""


class APIError(GatewayError):
    """The gateway answered with an HTTP error: ``status_code``, plus the ``type`` and
    ``message`` of its ``{"error": {"type", "message"}}`` body."""

    def __init__(self, status_code: int, type: str, message: str) -> None:
        super().__init__(f"{status_code} {type}: {message}")
        self.status_code = status_code
        self.type = type
        self.message = message


class WaitTimeout(GatewayError, TimeoutError):
    """``Client.wait`` gave up before the request reached a terminal status."""


class VersionMismatchWarning(UserWarning):
    """The cluster's ``CORTEX_VERSION`` differs from this chute's version."""
