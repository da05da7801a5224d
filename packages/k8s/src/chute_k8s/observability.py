"""Observability as Cortex shipped it: scrape configuration for the Prometheus operator, a
Grafana dashboard and alert rules, built from the metrics the gateway and the dequeuer export
(docs/gateway.md, docs/dequeuer.md). Annotations on the pods are in workload/gateway."""

from __future__ import annotations

from typing import Any

import msgspec

from chute_k8s import names
from chute_k8s.cluster import Cluster

Obj = dict[str, Any]
MONITORING = "monitoring.coreos.com/v1"


def _meta(cluster: Cluster, name: str, extra: dict[str, str]) -> Obj:
    labels = {**names.labels(cluster, "monitoring"), **extra}
    return {"name": name, "namespace": cluster.namespace, "labels": dict(sorted(labels.items()))}


def service_monitor(cluster: Cluster) -> Obj:
    """The gateway: request counters, latency and the queue depth of every API."""
    obs = cluster.observability
    return {
        "apiVersion": MONITORING,
        "kind": "ServiceMonitor",
        "metadata": _meta(cluster, names.gateway(cluster), obs.monitor_labels),
        "spec": {
            "selector": {"matchLabels": names.selector(cluster, "gateway")},
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": obs.scrape_interval}],
        },
    }


def pod_monitor(cluster: Cluster) -> Obj:
    """Every API's dequeuers, labelled with the API's name (``api_name``) as Cortex did."""
    obs = cluster.observability
    return {
        "apiVersion": MONITORING,
        "kind": "PodMonitor",
        "metadata": _meta(cluster, f"{cluster.name}-dequeuers", obs.monitor_labels),
        "spec": {
            "selector": {"matchLabels": {names.INSTANCE: cluster.name, names.COMPONENT: "api"}},
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "podMetricsEndpoints": [
                {
                    "port": "admin",
                    "path": "/metrics",
                    "interval": obs.scrape_interval,
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_chute_dev_api"],
                            "targetLabel": "api_name",
                        },
                    ],
                }
            ],
        },
    }


def _ns(cluster: Cluster) -> str:
    return f'namespace="{cluster.namespace}"'


def alert_rules(cluster: Cluster) -> Obj:
    """PrometheusRule: the queue grows with no replica, the failure ratio is high, requests
    wait with none finishing. (No metric gives the oldest request's age; "stalled" is the
    signal that a request has waited at least ``stalled_for``.)"""
    alerts = cluster.observability.alerts
    ns = _ns(cluster)
    replicas = (
        f'label_replace(kube_deployment_status_replicas_available{{{ns}, deployment=~"api-.+"}}, '
        f'"api_name", "$1", "deployment", "api-(.+)")'
    )
    queued = f"max by (api_name) (cortex_async_queued{{{ns}}})"
    deliveries = "chute_dequeuer_requests_total"
    ended = f'{ns}, outcome=~"completed|failed"'
    finished = f"sum by (api_name) (rate({deliveries}{{{ended}}}[{alerts.stalled_for}]))"
    failed = (
        f'sum by (api_name) (rate(chute_dequeuer_requests_total{{{ns}, outcome="failed"}}[5m]))'
    )
    done = f"sum by (api_name) (rate({deliveries}{{{ended}}}[5m]))"
    rules = [
        {
            "alert": "ChuteQueueGrowingWithoutReplicas",
            "expr": (
                f"({queued} > 0) and on (api_name) "
                f"(delta(max by (api_name) (cortex_async_queued{{{ns}}})[10m:1m]) > 0) "
                f"and on (api_name) (max by (api_name) ({replicas}) == 0)"
            ),
            "for": alerts.no_replicas_for,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "Requests of {{ $labels.api_name }} pile up and no replica runs",
                "description": "The queue grew over 10 minutes while api-{{ $labels.api_name }} "
                "had no available replica: check the ScaledObject (kubectl describe "
                "scaledobject api-{{ $labels.api_name }}) and whether pods can be scheduled.",
            },
        },
        {
            "alert": "ChuteFailureRatioHigh",
            "expr": f"({failed}) / ({done} > 0) > {alerts.failure_ratio:g}",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "More than {{ $value | humanizePercentage }} of "
                "{{ $labels.api_name }}'s requests fail",
                "description": "See chute_dequeuer_failures_total by reason.",
            },
        },
        {
            "alert": "ChuteQueueStalled",
            "expr": f"({queued} > 0) and on (api_name) ({finished} == 0)",
            "for": alerts.stalled_for,
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"Requests of {{{{ $labels.api_name }}}} have waited over "
                f"{alerts.stalled_for} with none finishing",
                "description": "Replicas run but finish nothing: the container may hang, or "
                "its readiness probes fail (chute_dequeuer_ready).",
            },
        },
    ]
    return {
        "apiVersion": MONITORING,
        "kind": "PrometheusRule",
        "metadata": _meta(cluster, f"{cluster.name}-alerts", cluster.observability.monitor_labels),
        "spec": {"groups": [{"name": "chute", "rules": rules}]},
    }


def _panel(
    panel_id: int, title: str, targets: list[tuple[str, str]], x: int, y: int, unit: str = "short"
) -> Obj:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(cluster: Cluster) -> Obj:
    """The Grafana dashboard (Cortex's "AsyncAPI" one, on chute's metrics), one API at a time."""
    ns = _ns(cluster)
    gw = f'{ns}, api="$api_name"'
    cx = f'{ns}, api_name="$api_name"'
    deployment = f'{ns}, deployment="api-$api_name"'
    quantiles = [
        (
            f"histogram_quantile({q}, sum by (le) (rate(cortex_async_latency_bucket{{{cx}}}[5m])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]
    quantiles.append(
        (
            f"sum(rate(cortex_async_latency_sum{{{cx}}}[5m])) / "
            f"sum(rate(cortex_async_latency_count{{{cx}}}[5m]))",
            "avg",
        )
    )
    panels = [
        _panel(
            1,
            "Request rate (submitted)",
            [
                (
                    f'sum(rate(chute_gateway_requests_total{{{gw}, method="POST"}}[1m]))',
                    "submitted/s",
                )
            ],
            0,
            0,
            "reqps",
        ),
        _panel(
            2,
            "Queue depth",
            [(f"max by (state) (chute_queue_depth{{{gw}}})", "{{state}}")],
            12,
            0,
        ),
        _panel(
            3,
            "In flight (queued + being processed) and active",
            [
                (f"max(cortex_async_in_flight{{{cx}}})", "in flight"),
                (f"sum(chute_dequeuer_in_flight{{{cx}}})", "in the containers"),
            ],
            0,
            8,
        ),
        _panel(4, "Container latency", quantiles, 12, 8, "s"),
        _panel(
            5,
            "Container answers by status code",
            [
                (
                    f"sum by (status_code) (rate(cortex_async_request_count{{{cx}}}[1m]))",
                    "{{status_code}}",
                )
            ],
            0,
            16,
            "reqps",
        ),
        _panel(
            6,
            "Failures by reason",
            [(f"sum by (reason) (rate(chute_dequeuer_failures_total{{{cx}}}[5m]))", "{{reason}}")],
            12,
            16,
            "reqps",
        ),
        _panel(
            7,
            "Replicas",
            [
                (
                    f"kube_deployment_status_replicas_available{{{deployment}}}",
                    "available",
                ),
                (f"kube_deployment_spec_replicas{{{deployment}}}", "desired"),
            ],
            0,
            24,
        ),
        _panel(
            8,
            "Deliveries by outcome",
            [
                (
                    f"sum by (outcome) (rate(chute_dequeuer_requests_total{{{cx}}}[1m]))",
                    "{{outcome}}",
                )
            ],
            12,
            24,
            "reqps",
        ),
    ]
    return {
        "uid": f"chute-{cluster.namespace}-{cluster.name}"[:40],
        "title": f"chute Async APIs ({cluster.namespace})",
        "tags": ["chute"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "api_name",
                    "label": "API",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": f"label_values(cortex_async_in_flight{{{ns}}}, api_name)",
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


def dashboard_configmap(cluster: Cluster) -> Obj:
    obs = cluster.observability
    text = msgspec.json.format(msgspec.json.encode(dashboard(cluster)), indent=2).decode()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(cluster, names.dashboard_configmap(cluster), obs.dashboard_labels),
        "data": {"chute.json": text + "\n"},
    }


def objects(cluster: Cluster) -> list[Obj]:
    """What the cluster file's ``observability`` asks for."""
    obs = cluster.observability
    out: list[Obj] = []
    if obs.grafana_dashboard:
        out.append(dashboard_configmap(cluster))
    if obs.monitors:
        out += [service_monitor(cluster), pod_monitor(cluster)]
    if obs.alerts.enabled:
        out.append(alert_rules(cluster))
    return out
