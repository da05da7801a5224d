"""``chute deploy`` against a real K3s cluster from testcontainers, wherever a Docker engine
answers. The only test of this suite that may skip (even with CHUTE_REQUIRE_SERVICES=1): a
machine without Docker cannot run a cluster, and the recording server covers the client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DATA, REPO, one_api

from chute.config import load_apis
from chute.registry import PluginManager
from chute_k8s.cluster import loads_cluster
from chute_k8s.deploy import delete_api, deploy
from chute_k8s.kube import Kube
from chute_k8s.render import render


def _docker_answers() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed"
    try:
        client = docker.from_env()
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}: {str(exc)[:120]})"
    return None


@pytest.fixture(scope="module")
def k3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = _docker_answers()
    if reason is not None:
        pytest.skip(f"K3s needs Docker to run a cluster in a container: {reason}")
    from testcontainers.k3s import K3SContainer

    with K3SContainer() as cluster:
        kubeconfig = tmp_path_factory.mktemp("k3s") / "kubeconfig"
        kubeconfig.write_text(cluster.config_yaml())
        yield kubeconfig


def _wait(kube: Kube, api_version: str, kind: str) -> None:
    deadline = time.monotonic() + 60
    while kube.kind(api_version, kind) is None:
        assert time.monotonic() < deadline, f"{kind} never became available"
        kube._kinds.pop(api_version, None)  # discovery again
        time.sleep(1)


def test_deploy_on_k3s(k3s: Path, manager: PluginManager) -> None:
    kube = Kube.connect(kubeconfig=str(k3s))
    try:
        for name in ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"):
            crd: dict[str, Any] = yaml.safe_load((DATA / name).read_text())
            kube.apply(crd, field_manager="chute-test")
        _wait(kube, "keda.sh/v1alpha1", "ScaledObject")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "chute-k3s"}}
        kube.apply(namespace, field_manager="chute-test")

        cluster = loads_cluster("namespace: chute-k3s\n")
        apis = load_apis(REPO / "examples/hello-world/api.yaml")
        deploy(render(apis, cluster, manager=manager), cluster, kube, lambda _: None)
        live = kube.get("apps/v1", "Deployment", "chute-k3s", "api-hello-world")
        assert live is not None
        containers = live["spec"]["template"]["spec"]["containers"]
        assert containers[-1]["resources"]["requests"] == {"cpu": "100m", "memory": "100Mi"}
        assert kube.get("keda.sh/v1alpha1", "ScaledObject", "chute-k3s", "api-hello-world")
        managers = {m["manager"] for m in live["metadata"]["managedFields"]}
        assert "chute" in managers

        # Applying again is a no-op for the server; a removed API is pruned.
        extra = one_api(
            "- name: other\n  kind: AsyncAPI\n  pod:\n"
            "    containers: [{name: api, image: registry.example.com/o:1}]\n"
        )
        deploy(render(apis + extra, cluster, manager=manager), cluster, kube, lambda _: None)
        assert kube.get("apps/v1", "Deployment", "chute-k3s", "api-other") is not None
        deploy(render(apis, cluster, manager=manager), cluster, kube, lambda _: None)
        assert kube.get("apps/v1", "Deployment", "chute-k3s", "api-other") is None

        delete_api("hello-world", cluster, kube, lambda _: None)
        assert kube.get("apps/v1", "Deployment", "chute-k3s", "api-hello-world") is None
    finally:
        kube.close()
