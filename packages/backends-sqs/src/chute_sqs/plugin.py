"""chute's plugin entry point for AWS (group ``chute``, name ``sqs``).

Registers ``sqs`` for the queue and ``s3`` for the store, and answers the KEDA trigger for
``sqs://`` queues. aiobotocore is imported by the factories, on first use, so that loading the
plugin costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chute import hookimpl

if TYPE_CHECKING:
    from chute.backends.base import Queue, Store
    from chute.config import API
    from chute.registry import BackendRegistry

#: The KEDA TriggerAuthentication chute-k8s renders for AWS credentials (IRSA or a Secret).
KEDA_AUTHENTICATION = "chute-aws"


def open_queue(url: str) -> Queue:
    """An SQS queue for ``url`` (``sqs://<queue-prefix>?region=…&endpoint_url=…``)."""
    from chute_sqs.queue import SqsQueue

    return SqsQueue(url)


def open_store(url: str) -> Store:
    """An S3 store for ``url`` (``s3://<bucket>/<prefix>?region=…&endpoint_url=…``)."""
    from chute_sqs.store import S3Store

    return S3Store(url)


@hookimpl
def chute_register_backends(registry: BackendRegistry) -> None:
    registry.add_queue("sqs", open_queue)
    registry.add_store("s3", open_store)


@hookimpl(optionalhook=True)  # chute-k8s's hook: declared only where it is installed
def chute_keda_trigger(queue_url: str, queue_name: str, api: API) -> dict[str, object] | None:
    """KEDA's ``aws-sqs-queue`` scaler on the API's queue, counting in-flight messages too
    (what Cortex scaled on: queued plus running). ``queue_name`` is recomputed from the URL,
    since only this plugin knows how it names queues."""
    if urlsplit(queue_url).scheme.lower() != "sqs":
        return None
    from chute_sqs.client import default_region
    from chute_sqs.settings import parse_sqs_url

    settings = parse_sqs_url(queue_url)
    region = settings.endpoint.region or default_region() or "us-east-1"
    target = api.autoscaling.target_in_flight or api.pod.max_concurrency
    metadata: dict[str, str] = {
        # KEDA accepts the queue's name where the account is implied by the credentials.
        "queueURL": settings.queue_name(api.name),
        "queueLength": format(max(1, round(target)), "d"),
        "awsRegion": region,
        "scaleOnInFlight": "true",
    }
    if settings.endpoint.endpoint_url:
        metadata["awsEndpoint"] = settings.endpoint.endpoint_url
    return {
        "type": "aws-sqs-queue",
        "metadata": metadata,
        "authenticationRef": {"name": KEDA_AUTHENTICATION},
    }
