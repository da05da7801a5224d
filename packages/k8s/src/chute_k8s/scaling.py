"""The KEDA ScaledObject of one API: Cortex's autoscaling fields mapped onto KEDA and the HPA.

The trigger comes from the queue backend's plugin (hook ``chute_keda_trigger``); chute-k8s
only knows how to ask. Each mapping, and each field with no equivalent, is documented in
docs/kubernetes.md ("Autoscaling").
"""

from __future__ import annotations

import math
from typing import Any

from chute.config import API, parse_duration
from chute.errors import ConfigError
from chute_k8s import names
from chute_k8s.cluster import Cluster
from chute_k8s.hooks import K8sHooks

Obj = dict[str, Any]
#: core's embedded backend (one file on one machine): no trigger, and it never gets one.
EMBEDDED_SCHEME = "sqlite"
#: Cortex's autoscaler ran every 10 s and applied its factors per tick.
TICK_SECONDS = 10


def trigger_context(cluster: Cluster) -> dict[str, str]:
    """What a backend's trigger may need to know about the cluster (hook argument)."""
    return {
        "namespace": cluster.namespace,
        "gateway_url": cluster.gateway_url,
        "prometheus_url": cluster.observability.prometheus_url,
    }


def trigger(api: API, cluster: Cluster, hooks: K8sHooks) -> Obj:
    """Ask the queue's plugin for the KEDA trigger; a clear error when none answers."""
    answer = hooks.keda_trigger(
        queue_url=cluster.queue_url,
        queue_name=api.name,
        api=api,
        cluster=trigger_context(cluster),
    )
    if answer is None:
        scheme = cluster.queue_url.partition("://")[0]
        if scheme.lower() == EMBEDDED_SCHEME:
            from chute.install import install_line

            raise ConfigError(
                f"API {api.name!r}: the queue {cluster.queue_url!r} is the embedded SQLite "
                "backend, a file on one machine that pods on a cluster cannot share, so it "
                "cannot be autoscaled there; use a networked queue such as redis:// "
                f"({install_line('redis')}) or sqs:// ({install_line('sqs')}) in the cluster file"
            )
        raise ConfigError(
            f"API {api.name!r}: no installed plugin supplies a KEDA trigger for {scheme}:// "
            f"queues, so the API cannot be autoscaled on its queue; use a queue whose plugin "
            f"does (redis://, sqs://) or install that plugin's extra"
        )
    if not isinstance(answer, dict) or not isinstance(answer.get("type"), str):
        raise ConfigError(
            f"API {api.name!r}: the KEDA trigger for {cluster.queue_url!r} is not a mapping "
            f"with a 'type' (got {answer!r}); the queue's plugin is broken"
        )
    return dict(answer)


def _percent(amount: float) -> int:
    """A per-tick change as an HPA Percent policy value (at least 1)."""
    return max(1, round(amount * 100))


def behavior(api: API) -> Obj:
    """HPA behaviour equivalent to Cortex's stabilisation periods, factors and tolerances.

    Cortex allowed per 10 s tick at most ``ceil(current * max_upscale_factor)`` replicas and
    always +1; down to ``ceil(current * max_downscale_factor)`` and always -1. Two policies
    per direction with ``selectPolicy: Max`` say exactly "the larger of the two changes".
    """
    s = api.autoscaling
    return {
        "scaleDown": {
            "stabilizationWindowSeconds": math.ceil(
                parse_duration(s.downscale_stabilization_period)
            ),
            "tolerance": format(s.downscale_tolerance, "g"),
            "selectPolicy": "Max",
            "policies": [
                {
                    "type": "Percent",
                    "value": _percent(1 - s.max_downscale_factor),
                    "periodSeconds": TICK_SECONDS,
                },
                {"type": "Pods", "value": 1, "periodSeconds": TICK_SECONDS},
            ],
        },
        "scaleUp": {
            "stabilizationWindowSeconds": math.ceil(parse_duration(s.upscale_stabilization_period)),
            "tolerance": format(s.upscale_tolerance, "g"),
            "selectPolicy": "Max",
            "policies": [
                {
                    "type": "Percent",
                    "value": _percent(s.max_upscale_factor - 1),
                    "periodSeconds": TICK_SECONDS,
                },
                {"type": "Pods", "value": 1, "periodSeconds": TICK_SECONDS},
            ],
        },
    }


def scaled_object(api: API, cluster: Cluster, hooks: K8sHooks) -> Obj:
    s = api.autoscaling
    spec: Obj = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": names.deployment(api),
        },
        "pollingInterval": cluster.polling_interval,
        # Scale to zero waits as long as any other scale-down would.
        "cooldownPeriod": math.ceil(parse_duration(s.downscale_stabilization_period)),
        "minReplicaCount": s.min_replicas,
        "maxReplicaCount": s.max_replicas,
        "advanced": {
            "restoreToOriginalReplicaCount": False,
            "horizontalPodAutoscalerConfig": {
                "name": names.deployment(api),
                "behavior": behavior(api),
            },
        },
        "triggers": [trigger(api, cluster, hooks)],
    }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": names.deployment(api),
            "namespace": cluster.namespace,
            "labels": names.labels(cluster, "api", api),
        },
        "spec": spec,
    }


def trigger_authentications(cluster: Cluster) -> list[Obj]:
    """The TriggerAuthentications the cluster file defines, by name."""
    return [
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {
                "name": name,
                "namespace": cluster.namespace,
                "labels": names.labels(cluster, "autoscaling"),
            },
            "spec": spec,
        }
        for name, spec in sorted(cluster.trigger_authentications.items())
    ]
