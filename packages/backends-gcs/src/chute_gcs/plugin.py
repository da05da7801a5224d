"""chute's plugin entry point for Google Cloud (group ``chute``, name ``gcs``).

Registers ``gs`` for the store (Cloud Storage) and ``pubsub`` for the queue (Pub/Sub), and
answers the KEDA trigger for ``pubsub://`` queues. aiohttp and gcloud-aio-auth are imported by
the factories, on first use, so that loading the plugin costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chute import hookimpl

if TYPE_CHECKING:
    from chute.backends.base import Queue, Store
    from chute.config import API
    from chute.registry import BackendRegistry

SCHEME = "gs"
QUEUE_SCHEME = "pubsub"
#: The KEDA TriggerAuthentication chute-k8s renders for Google credentials (Workload Identity
#: or a Secret with a service account key).
KEDA_AUTHENTICATION = "chute-gcp"


def open_store(url: str) -> Store:
    """A GCS store for ``url`` (``gs://bucket[/prefix][?project=…&endpoint_url=…]``)."""
    from chute_gcs.store import GcsStore

    return GcsStore(url)


def open_queue(url: str) -> Queue:
    """A Pub/Sub queue for ``url`` (``pubsub://project[/prefix][?endpoint_url=…]``)."""
    from chute_gcs.pubsub import PubSubQueue

    return PubSubQueue(url)


@hookimpl
def chute_register_backends(registry: BackendRegistry) -> None:
    registry.add_store(SCHEME, open_store)
    registry.add_queue(QUEUE_SCHEME, open_queue)


@hookimpl(optionalhook=True)  # chute-k8s's hook: declared only where it is installed
def chute_keda_trigger(queue_url: str, queue_name: str, api: API) -> dict[str, object] | None:
    """KEDA's ``gcp-pubsub`` scaler on the API's subscription: it reads the Cloud Monitoring
    metric ``subscription/num_undelivered_messages`` (messages not yet acked: waiting and
    running, what Cortex scaled on). ``queue_name`` is recomputed from the URL, since only this
    plugin knows how it names subscriptions."""
    if urlsplit(queue_url).scheme.lower() != QUEUE_SCHEME:
        return None
    from chute_gcs.pubsub_settings import parse_pubsub_url

    settings = parse_pubsub_url(queue_url)
    target = api.autoscaling.target_in_flight or api.pod.max_concurrency
    return {
        "type": "gcp-pubsub",
        "metadata": {
            "subscriptionName": settings.subscription(settings.name(api.name)),
            "mode": "SubscriptionSize",
            "value": format(max(1, round(target)), "d"),
        },
        "authenticationRef": {"name": KEDA_AUTHENTICATION},
    }
