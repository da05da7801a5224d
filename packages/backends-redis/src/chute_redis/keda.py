"""The KEDA trigger that scales an API whose queue is on Redis (hook ``chute_keda_trigger``).

chute's Redis queue keeps ids in a list and sorted sets (``visible``, ``delayed``, ``leased``;
see docs/redis.md): KEDA's ``redis`` scaler (one list's length) would miss the delayed and
leased ones, and its ``redis-streams`` scaler (stream lag) cannot read them at all.
So the trigger is KEDA's ``prometheus`` scaler on the gauge the gateway exports for every
API, ``cortex_async_in_flight`` = queued + being processed, read from Redis at each scrape:
the same signal and the same query shape as Cortex's autoscaler (the mean over
``autoscaling.window``, divided by ``target_in_flight``). The gateway reports the queue even
when the API has no replica, so scale-from-zero works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chute import hookimpl

if TYPE_CHECKING:
    from chute.config import API

SCHEMES = ("redis", "rediss")


def query(api: str, namespace: str, window_seconds: int) -> str:
    """PromQL: the API's in-flight count averaged over the window; ``max`` because every
    gateway replica reports the same true figure."""
    selector = f'api_name="{api}", namespace="{namespace}"'
    return f"max(avg_over_time(cortex_async_in_flight{{{selector}}}[{window_seconds}s]))"


@hookimpl(optionalhook=True)  # chute-k8s's hook: declared only where it is installed
def chute_keda_trigger(
    queue_url: str, queue_name: str, api: API, cluster: Mapping[str, str]
) -> dict[str, object] | None:
    if urlsplit(queue_url).scheme.lower() not in SCHEMES:
        return None
    from chute.config import parse_duration

    window = math.ceil(parse_duration(api.autoscaling.window))
    target = api.autoscaling.target_in_flight or float(api.pod.max_concurrency)
    return {
        "type": "prometheus",
        "metadata": {
            "serverAddress": cluster["prometheus_url"],
            "query": query(queue_name, cluster["namespace"], window),
            "threshold": format(target, "g"),
            # Any request waiting wakes an API scaled to zero.
            "activationThreshold": "0",
            # No answer means Prometheus does not scrape the gateway: an error, not zero.
            "ignoreNullValues": "false",
        },
    }
