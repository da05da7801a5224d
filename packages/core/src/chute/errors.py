"""chute's exceptions: one root, seven families, all in this module.

Callers catch these and nothing else: backends translate their SDK's exceptions at the
boundary (``raise BackendUnavailable(...) from exc``), so no caller ever needs to know about
``redis.ConnectionError`` or ``botocore`` errors. The tree (``*``: also in another family)::

    ChuteError
    ├── ConfigError                   a configuration file, URL or option is invalid
    │   ├── ConfigValidationError     an API file's problems, every one in ``.issues``
    │   ├── UnknownSchemeError *      (a PluginError too)
    │   └── InvalidAPIName *          (a ProtocolError too)
    ├── PluginError                   a plugin could not be loaded, or plugins disagree
    │   ├── UnknownSchemeError *      no plugin serves a backend URL's scheme
    │   └── DuplicateSchemeError      two plugins claim one scheme
    ├── BackendError                  a queue or store operation failed
    │   ├── BackendUnavailable        cannot reach it now; retrying may help
    │   │   └── PreflightError        a backend ``chute dev`` needs is not usable
    │   ├── CredentialsRefused        the backend refused our credentials or permissions
    │   ├── NotFound                  unknown or expired request id
    │   ├── Conflict                  a conditional write lost
    │   │   └── TransitionRejected    a status change not allowed from the record's state
    │   ├── LeaseLost                 the delivery belongs to someone else now
    │   ├── PayloadTooLarge           above the gateway's or the backend's limit
    │   └── Unsupported               an optional capability the backend declares absent
    ├── ProtocolError                 a message on the wire does not follow the protocol
    │   ├── InvalidRequestId          a malformed request id
    │   └── InvalidAPIName *          an API name that cannot be part of a key
    ├── GatewayError                  a call from chute.Client to a gateway failed
    │   ├── GatewayUnreachable        no connection, or an HTTP timeout
    │   ├── APIError                  the gateway answered an HTTP error
    │   └── WaitTimeout               ``Client.wait`` gave up (a TimeoutError too)
    ├── WebhookError                  a webhook cannot be sent or checked
    │   ├── TargetRefused             a per-request webhook URL is not allowed
    │   ├── WebhookSecretError        a secret is missing or not ``whsec_<base64>``
    │   └── WebhookVerificationError  a delivery's signature or timestamp does not check out
    └── DevError                      ``chute dev`` could not start or keep its processes

    VersionMismatchWarning (a UserWarning): the cluster's CORTEX_VERSION differs from chute's.

Plugins raise these and add their own below them, in their own package: ``chute_k8s``'s
``KubeError`` (a ChuteError: the Kubernetes API server refused a request) and the dequeuer's
``PayloadUnavailable`` (a BackendUnavailable: the store failed while a payload streamed).
Exceptions that never leave their module are signals, not chute errors (the gateway's
``HTTPError``, which carries an HTTP answer, and its number and header parsers' ValueErrors).

The old homes still export their errors (``chute.config.ConfigValidationError``,
``chute._dev.DevError``, ``chute.webhooks.WebhookSecretError``, ...). See docs/plugins.md#errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chute.config import ConfigIssue


class ChuteError(Exception):
    """The root of every error chute raises on purpose."""


# --- configuration -------------------------------------------------------------------------


class ConfigError(ChuteError):
    """A configuration file, URL or option is invalid."""


class ConfigValidationError(ConfigError):
    """A configuration file has one or more problems; ``issues`` lists every one of them."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


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


class PreflightError(BackendUnavailable):
    """A backend or a setting that a process would need is not usable."""


class CredentialsRefused(BackendError):
    """The backend refused our credentials: wrong, expired or missing (a password, key or
    token), or not allowed to do this (Redis ``NOPERM``, S3/SQS ``AccessDenied``, GCS 403).

    Not a :class:`BackendUnavailable`: retrying does not help until the credentials or the
    permissions are fixed."""


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


# --- webhooks ------------------------------------------------------------------------------


class WebhookError(ChuteError):
    """A webhook cannot be sent or checked."""


class TargetRefused(WebhookError):
    """A per-request webhook URL is not allowed; the message says why (never retried)."""


class WebhookSecretError(WebhookError):
    """A webhook secret is missing or not ``whsec_<base64>``."""


class WebhookVerificationError(WebhookError):
    """A delivery's signature or timestamp does not check out."""


# --- chute dev -----------------------------------------------------------------------------


class DevError(ChuteError):
    """``chute dev`` could not start or keep its processes running."""


# --- warnings ------------------------------------------------------------------------------


class VersionMismatchWarning(UserWarning):
    """The cluster's ``CORTEX_VERSION`` differs from this chute's version."""
