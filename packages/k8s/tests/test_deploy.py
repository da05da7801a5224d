"""``chute deploy | delete | status`` through the official kubernetes client, against a real
HTTP server on 127.0.0.1 that records what the client sends (apiserver.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import redis
from apiserver import FakeCluster, api_server
from conftest import one_api

from chute.errors import ConfigError, NotFound
from chute.registry import PluginManager
from chute.testing.services import FoundService
from chute_k8s.cluster import loads_cluster
from chute_k8s.deploy import delete_api, deploy, format_status, status
from chute_k8s.kube import Kube
from chute_k8s.render import render

TWO_APIS = """
- name: alpha
  kind: AsyncAPI
  pod:
    containers: [{name: api, image: registry.example.com/a:1}]
  autoscaling: {min_replicas: 0, max_replicas: 3}
- name: beta
  kind: AsyncAPI
  pod:
    containers: [{name: api, image: registry.example.com/b:1}]
"""
CLUSTER = "namespace: apps\nobservability: {grafana_dashboard: false}\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[FakeCluster, Kube]]:
    with api_server(tmp_path) as (state, kubeconfig):
        kube = Kube.connect(kubeconfig=str(kubeconfig))
        try:
            yield state, kube
        finally:
            kube.close()


def test_deploy_applies_every_object_server_side(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    state, kube = server
    cluster = loads_cluster(CLUSTER)
    objects = render(one_api(TWO_APIS), cluster, manager=manager)
    said: list[str] = []
    deploy(objects, cluster, kube, said.append)

    applies = [c for c in state.calls if c.method == "PATCH"]
    assert len(applies) == len(objects)
    for call, obj in zip(applies, objects, strict=True):
        assert call.content_type == "application/apply-patch+yaml"
        assert call.query == {"fieldManager": "chute", "force": "true"}
        assert call.authorization == "Bearer test-token"
        assert call.body == obj
    assert [c.path for c in applies[-4:]] == [
        "/apis/apps/v1/namespaces/apps/deployments/api-alpha",
        "/apis/keda.sh/v1alpha1/namespaces/apps/scaledobjects/api-alpha",
        "/apis/apps/v1/namespaces/apps/deployments/api-beta",
        "/apis/keda.sh/v1alpha1/namespaces/apps/scaledobjects/api-beta",
    ]
    assert applies[0].path == "/api/v1/namespaces/apps/configmaps/chute-apis"
    assert not [c for c in state.calls if c.method == "DELETE"]
    assert said[-1] == "applied ScaledObject api-beta"


def test_redeploy_keeps_the_autoscalers_replicas(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    state, kube = server
    cluster = loads_cluster(CLUSTER)
    objects = render(one_api(TWO_APIS), cluster, manager=manager)
    deploy(objects, cluster, kube, lambda _: None)
    live = state.find("Deployment", "api-beta")
    assert live is not None
    assert live["spec"]["replicas"] == 1
    live["spec"]["replicas"] = 7  # KEDA scaled it
    state.calls.clear()
    deploy(objects, cluster, kube, lambda _: None)
    (apply,) = [c for c in state.calls if c.method == "PATCH" and c.path.endswith("/api-beta")
                and "deployments" in c.path]  # fmt: skip
    assert apply.body["spec"]["replicas"] == 7


def test_deploy_prunes_apis_removed_from_the_file(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    state, kube = server
    cluster = loads_cluster(CLUSTER)
    deploy(render(one_api(TWO_APIS), cluster, manager=manager), cluster, kube, lambda _: None)
    # Someone else's Deployment in the namespace, and another chute instance's: untouched.
    state.objects[("apps/v1", "deployments", "apps", "theirs")] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "theirs", "labels": {"app": "theirs"}},
    }  # fmt: skip
    state.objects[("apps/v1", "deployments", "apps", "api-other")] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api-other", "labels": {
            "app.kubernetes.io/managed-by": "chute", "app.kubernetes.io/instance": "other"}},
    }  # fmt: skip
    state.calls.clear()
    only_beta = TWO_APIS[TWO_APIS.index("- name: beta") :]
    said: list[str] = []
    deploy(render(one_api(only_beta), cluster, manager=manager), cluster, kube, said.append)

    deletes = [c.path for c in state.calls if c.method == "DELETE"]
    assert deletes == [
        "/apis/keda.sh/v1alpha1/namespaces/apps/scaledobjects/api-alpha",
        "/apis/apps/v1/namespaces/apps/deployments/api-alpha",
    ]
    (delete,) = [c for c in state.calls if c.method == "DELETE"][:1]
    assert delete.body == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Background",
    }
    lists = [c for c in state.calls if c.method == "GET" and "labelSelector" in c.query]
    assert {c.query["labelSelector"] for c in lists} == {
        "app.kubernetes.io/managed-by=chute,app.kubernetes.io/instance=chute"
    }
    assert state.find("Deployment", "api-alpha") is None
    assert state.find("Deployment", "api-beta") is not None
    assert state.find("Deployment", "theirs") is not None
    assert state.find("Deployment", "api-other") is not None
    assert "pruned Deployment api-alpha" in said


def test_deploy_changes_nothing_when_a_kind_is_missing(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    """Monitors asked for, no Prometheus operator on the cluster: refused before any apply."""
    state, kube = server
    cluster = loads_cluster("namespace: apps\nobservability: {monitors: true}\n")
    objects = render(one_api(TWO_APIS), cluster, manager=manager)
    with pytest.raises(ConfigError, match=r"no ServiceMonitor \(monitoring.coreos.com/v1\); "
                       "install the Prometheus operator"):  # fmt: skip
        deploy(objects, cluster, kube, lambda _: None)
    assert not [c for c in state.calls if c.method != "GET"]


def test_delete_one_api(server: tuple[FakeCluster, Kube], manager: PluginManager) -> None:
    state, kube = server
    cluster = loads_cluster(CLUSTER)
    deploy(render(one_api(TWO_APIS), cluster, manager=manager), cluster, kube, lambda _: None)
    state.calls.clear()
    said: list[str] = []
    delete_api("alpha", cluster, kube, said.append)
    assert said == ["deleted ScaledObject api-alpha", "deleted Deployment api-alpha"]
    assert {c.query.get("labelSelector") for c in state.calls if c.query} == {
        "app.kubernetes.io/managed-by=chute,app.kubernetes.io/instance=chute,chute.dev/api=alpha"
    }
    assert state.find("ScaledObject", "api-beta") is not None
    with pytest.raises(NotFound, match="no API 'alpha' deployed by chute in namespace 'apps'"):
        delete_api("alpha", cluster, kube, said.append)


@pytest.fixture
def queue_url(redis_service: FoundService) -> Iterator[str]:
    """A Redis queue URL on database 11 with a prefix of this test's own, cleaned after."""
    prefix = f"chute-k8s-test-{uuid.uuid4().hex[:8]}"
    base = redis_service.url.rstrip("/")
    base = base if base.count("/") > 2 else base + "/11"
    yield f"{base}?prefix={prefix}"
    client = redis.Redis.from_url(base)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def test_status_shows_replicas_and_queue_depth(
    server: tuple[FakeCluster, Kube], manager: PluginManager, queue_url: str
) -> None:
    state, kube = server
    cluster = loads_cluster(CLUSTER)
    deploy(render(one_api(TWO_APIS), cluster, manager=manager), cluster, kube, lambda _: None)
    beta = state.find("Deployment", "api-beta")
    assert beta is not None
    beta["status"] = {"readyReplicas": 1, "updatedReplicas": 1}
    scaler = state.find("ScaledObject", "api-beta")
    assert scaler is not None
    scaler["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}

    async def enqueue() -> None:
        from chute.registry import open_queue

        async with open_queue(queue_url) as queue:
            for _ in range(2):
                await queue.send("alpha", uuid.uuid4().hex)

    anyio.run(enqueue)
    rows = status(cluster, kube, queue_url=queue_url)
    assert [r.api for r in rows] == ["alpha", "beta"]
    alpha, beta_row = rows
    assert (alpha.desired, alpha.ready, alpha.min_replicas, alpha.max_replicas) == (0, 0, 0, 3)
    assert alpha.depth is not None
    assert (alpha.depth.queued, alpha.depth.in_flight) == (2, 0)
    assert (beta_row.desired, beta_row.ready, beta_row.scaler_ready) == (1, 1, "True")
    assert beta_row.depth is not None
    assert beta_row.depth.queued == 0
    table = format_status(rows).splitlines()
    assert table[0].split() == ["API", "READY", "DESIRED", "UPDATED", "MIN", "MAX", "SCALER",
                                "QUEUED", "IN", "FLIGHT", "DEAD"]  # fmt: skip
    assert table[1].split() == ["alpha", "0", "0", "0", "0", "3", "Unknown", "2", "0", "0"]


def test_status_says_why_depth_is_unknown(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    _, kube = server
    cluster = loads_cluster(CLUSTER)
    deploy(render(one_api(TWO_APIS), cluster, manager=manager), cluster, kube, lambda _: None)
    rows = status(cluster, kube, queue_url="redis://127.0.0.1:1/0")
    assert all(r.depth is None and r.depth_error for r in rows)
    assert "alpha: queue depth unknown: " in format_status(rows)


def test_status_of_a_queue_that_cannot_count_says_so(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    """Pub/Sub declares supports_depth = False: status does not ask it (nothing listens at
    the endpoint: asking would be an outage error instead) and says why there is no depth."""
    _, kube = server
    cluster = loads_cluster(CLUSTER)
    deploy(render(one_api(TWO_APIS), cluster, manager=manager), cluster, kube, lambda _: None)
    rows = status(cluster, kube, queue_url="pubsub://chute-test/x?endpoint_url=http://127.0.0.1:1")
    assert all(r.depth is None for r in rows)
    assert "alpha: queue depth unknown: PubSubQueue cannot count its messages" in format_status(
        rows
    )


def test_an_unreachable_api_server_is_a_clear_error(manager: PluginManager, tmp_path: Path) -> None:
    with api_server(tmp_path) as (_, kubeconfig):
        pass  # stopped: nothing listens there any more
    kube = Kube.connect(kubeconfig=str(kubeconfig))
    cluster = loads_cluster(CLUSTER)
    from chute.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="cannot reach the Kubernetes API server"):
        deploy(render(one_api(TWO_APIS), cluster, manager=manager), cluster, kube)
    kube.close()


def test_the_recorded_body_is_the_rendered_yaml(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    """What reaches the server decodes to exactly the objects ``chute render`` prints."""
    import yaml

    from chute_k8s.output import to_yaml

    state, kube = server
    cluster = loads_cluster(CLUSTER)
    objects = render(one_api(TWO_APIS), cluster, manager=manager)
    deploy(objects, cluster, kube, lambda _: None)
    printed = list(yaml.safe_load_all(to_yaml(objects)))
    sent = [c.body for c in state.calls if c.method == "PATCH"]
    assert msgspec.json.encode(sent) == msgspec.json.encode(printed)


def test_kubeconfig_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load the kubeconfig"):
        Kube.connect(kubeconfig=str(tmp_path / "missing"))


def test_turning_the_cortex_address_off_prunes_it_but_keeps_the_namespace(
    server: tuple[FakeCluster, Kube], manager: PluginManager
) -> None:
    state, kube = server
    cluster = loads_cluster(CLUSTER)
    deploy(render(one_api(TWO_APIS), cluster, manager=manager), cluster, kube, lambda _: None)
    assert state.find("Service", "ingressgateway-apis") is not None
    assert state.find("Namespace", "istio-system") is not None

    off = loads_cluster(CLUSTER + "gateway: {cortex_address: false}\n")
    said: list[str] = []
    deploy(render(one_api(TWO_APIS), off, manager=manager), off, kube, said.append)
    assert state.find("Service", "ingressgateway-apis") is None
    assert "pruned Service ingressgateway-apis" in said
    # Never pruned: where Istio runs, the namespace is Istio's.
    assert state.find("Namespace", "istio-system") is not None
    assert state.find("Service", "chute-gateway") is not None
