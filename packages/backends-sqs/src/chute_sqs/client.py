"""The process's aiobotocore clients, and botocore's errors translated into chute's.

One aiobotocore session per process and one client per service, region and endpoint, created
on first use and shared by every queue and store that names them: the gateway's store and a
dequeuer's queue and store reuse pooled HTTP connections. aiohttp sessions belong to the event
loop that opened them, so the cache is kept per running loop (a production process has one
loop; a test suite has several). Clients retry throttling, 5xx and connection errors with
backoff in botocore's ``standard`` retry mode; what still fails is translated at this boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore import exceptions as bexc

from chute.backends.pool import LoopHandle, LoopShared
from chute.errors import (
    BackendError,
    BackendUnavailable,
    ChuteError,
    Conflict,
    CredentialsRefused,
    NotFound,
)
from chute_sqs.settings import AwsEndpoint

#: Error codes AWS uses for throttling and transient server trouble (after the SDK's retries).
_UNAVAILABLE_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMS.ThrottlingException",
    }
)
_NOT_FOUND_CODES: Final = frozenset(
    {
        "NoSuchKey",
        "NoSuchBucket",
        "NoSuchUpload",
        "NotFound",
        "404",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
    }
)
_CONFLICT_CODES: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
#: Error codes of credentials AWS refused: unknown, expired or badly signed keys, or a principal
#: not allowed to make the call (S3 and SQS, and the query and JSON protocols' spellings).
_CREDENTIALS_CODES: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AWS.SimpleQueueService.AccessDenied",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "MissingAuthenticationToken",
        "AuthFailure",
    }
)


def error_code(exc: bexc.ClientError) -> str:
    """The AWS error code of a ClientError (``NoSuchKey``, ``PreconditionFailed``, …)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: bexc.ClientError) -> int:
    """The HTTP status of a ClientError's response (0 if unknown)."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def translate(exc: BaseException, where: str, doing: str) -> ChuteError | None:
    """chute's error for a botocore/aiohttp exception; None for anything else."""
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return CredentialsRefused(
            f"{where}: no usable AWS credentials ({doing}); set them in the environment, a "
            f"profile or the instance/container role: {exc}"
        )
    if isinstance(exc, bexc.ClientError):
        code, status = error_code(exc), http_status(exc)
        if code in _CONFLICT_CODES or status in (409, 412):
            return Conflict(f"{where}: a precondition failed ({doing}): {code}")
        if code in _NOT_FOUND_CODES or status == 404:
            return NotFound(f"{where}: not found ({doing}): {code} {exc}")
        if code in _CREDENTIALS_CODES or status in (401, 403):
            return CredentialsRefused(f"{where} refused our credentials ({doing}): {exc}")
        if code in _UNAVAILABLE_CODES or status >= 500 or status == 429:
            return BackendUnavailable(f"{where} is unavailable ({doing}): {exc}")
        return BackendError(f"{where} refused {doing}: {exc}")
    if isinstance(exc, bexc.HTTPClientError | bexc.ConnectionError):
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosed…
        return BackendUnavailable(f"{where} is unreachable ({doing}): {exc}")
    if isinstance(exc, bexc.BotoCoreError):
        return BackendError(f"{where} failed {doing}: {exc}")
    if isinstance(exc, OSError | asyncio.TimeoutError):
        return BackendUnavailable(f"{where} is unreachable ({doing}): {exc}")
    return None


@contextlib.contextmanager
def sdk_errors(where: str, doing: str) -> Iterator[None]:
    """Translate what escapes the block into chute's errors, naming the service and the call."""
    try:
        yield
    except ChuteError:
        raise
    except Exception as exc:
        translated = translate(exc, where, doing)
        if translated is None:
            raise
        raise translated from exc


# --- the shared clients ------------------------------------------------------------------------

_session: AioSession | None = None


def session() -> AioSession:
    """The process's aiobotocore session (credentials and config from the AWS chain)."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


def default_region() -> str | None:
    """The region the AWS chain names (AWS_REGION, AWS_DEFAULT_REGION, the profile), if any."""
    region = session().get_config_variable("region")
    return str(region) if region else None


class _Shared:
    """An open aiobotocore client and the context manager that closes it."""

    def __init__(self, context: Any, client: Any) -> None:
        self.context = context
        self.client = client


_clients: LoopShared[_Shared] = LoopShared()


async def _close(shared: _Shared) -> None:
    await shared.context.__aexit__(None, None, None)


def _config(service: str, endpoint: AwsEndpoint) -> AioConfig:
    extra: dict[str, Any] = {}
    if service == "s3" and endpoint.endpoint_url:
        # moto, LocalStack and MinIO-style endpoints serve buckets by path, not subdomain.
        extra["s3"] = {"addressing_style": "path"}
    return AioConfig(
        retries={"mode": "standard", "max_attempts": endpoint.max_attempts},
        connect_timeout=5,
        # Above SQS's longest long poll (20 s), so a waiting receive is never cut short.
        read_timeout=60,
        max_pool_connections=64,
        **extra,
    )


class Clients:
    """A handle on the process's shared client for one service and endpoint; what queues and
    stores hold. :meth:`get` creates the client on first use in each event loop; :meth:`aclose`
    gives it back, and the last user closes it."""

    def __init__(self, service: str, endpoint: AwsEndpoint) -> None:
        self.service = service
        region = endpoint.region or default_region()
        if region is None and endpoint.endpoint_url:
            region = "us-east-1"  # moto and LocalStack accept any region
        if region is None:
            raise BackendError(
                f"no AWS region for {service}: add ?region=… to the URL or set AWS_REGION"
            )
        self.endpoint = AwsEndpoint(
            region=region, endpoint_url=endpoint.endpoint_url, max_attempts=endpoint.max_attempts
        )
        self.where = self.endpoint.describe(service.upper())
        self._handle = LoopHandle(
            _clients,
            (service, region, endpoint.endpoint_url, endpoint.max_attempts),
            _close,
            closed_message=f"this {self.where} queue or store is closed",
        )

    async def _open(self) -> _Shared:
        context = session().create_client(
            self.service,
            region_name=self.endpoint.region,
            endpoint_url=self.endpoint.endpoint_url,
            config=_config(self.service, self.endpoint),
        )
        with sdk_errors(self.where, "creating a client"):
            client = await context.__aenter__()
        return _Shared(context, client)

    async def get(self) -> Any:
        """The shared client for the running event loop (an aiobotocore client)."""
        return (await self._handle.get(self._open)).client

    async def aclose(self) -> None:
        """Give the client back; close it if nobody else in this loop uses it."""
        await self._handle.aclose()
