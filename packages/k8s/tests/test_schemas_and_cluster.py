"""The schema checks can fail; the cluster file's defaults and errors; the objects hook."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DATA, REPO, by_kind, one_api, pod_of
from schemas import validate, validate_all

from chute import hookimpl
from chute.config import API
from chute.errors import ConfigError
from chute.registry import PluginManager
from chute_k8s.cluster import Cluster, load_cluster, loads_cluster
from chute_k8s.render import render

API_TEXT = """
- name: small
  kind: AsyncAPI
  pod:
    containers: [{name: api, image: registry.example.com/s:1}]
"""


def test_schema_checks_catch_mistakes(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(one_api(API_TEXT), cluster, manager=manager)
    deployment = copy.deepcopy(by_kind(objects, "Deployment", "api-small"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo
    with pytest.raises(Exception, match="resource"):
        validate(deployment)
    scaled = copy.deepcopy(by_kind(objects, "ScaledObject"))
    scaled["spec"]["minReplicaCount"] = -1
    with pytest.raises(Exception, match="minimum"):
        validate(scaled)
    scaled = copy.deepcopy(by_kind(objects, "ScaledObject"))
    del scaled["spec"]["triggers"][0]["type"]
    with pytest.raises(Exception, match="type"):
        validate(scaled)


def test_an_empty_cluster_file_is_all_defaults(manager: PluginManager) -> None:
    cluster = loads_cluster("")
    assert cluster == Cluster()
    assert cluster.gateway_url == "http://chute-gateway.default.svc:8888"
    assert cluster.grace_seconds == 60  # Cortex's terminationGracePeriodSeconds
    validate_all(render(one_api(API_TEXT), cluster, manager=manager))


def test_the_test_cluster_file_loads() -> None:
    cluster = load_cluster(DATA / "cluster.yaml")
    assert cluster.namespace == "chute-test"
    assert cluster.observability.alerts.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("namespaces: x\n", "$: Object contains unknown field `namespaces`"),
        ("namespace: Not_Valid\n", "$.namespace: expected lowercase letters"),
        ("gateway: {replicas: many}\n", "$.gateway.replicas: Expected `int`, got `str`"),
        ("store_url: sqlite:///x.db\n", "$.store_url: the embedded SQLite store"),
        ("termination_grace_period: 20\n", "$.termination_grace_period: expected at least 5 s"),
        ("gateway: {min_replicas: 3, max_replicas: 2}\n", "min_replicas <= max_replicas"),
        ("observability: {alerts: {stalled_for: soon}}\n", "stalled_for: expected a duration"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_cluster_file_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loads_cluster(text, file="cluster.yaml")
    assert str(caught.value).startswith("cluster.yaml: ")
    assert message in str(caught.value)


class ServiceAccount:
    """A plugin of the kind docs/kubernetes.md shows: a service account for every API pod."""

    @hookimpl
    def chute_k8s_objects(
        self, objects: list[dict[str, Any]], api: API | None, cluster: Cluster
    ) -> None:
        if api is None:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "chute-apis", "namespace": cluster.namespace},
                }
            )
            return
        for obj in objects:
            if obj["kind"] == "Deployment":
                obj["spec"]["template"]["spec"]["serviceAccountName"] = "chute-apis"


def test_plugins_adjust_the_objects(cluster: Cluster, manager: PluginManager) -> None:
    manager.register(ServiceAccount(), "service-account")
    objects = render(one_api(API_TEXT), cluster, manager=manager)
    validate_all(objects)
    assert pod_of(objects, "small")["serviceAccountName"] == "chute-apis"
    assert by_kind(objects, "ServiceAccount")["metadata"]["name"] == "chute-apis"
    gateway = by_kind(objects, "Deployment", "chute-gateway")["spec"]["template"]["spec"]
    assert "serviceAccountName" not in gateway  # the plugin chose API pods only


def test_chute_render_command(tmp_path: Path) -> None:
    """The installed ``chute`` command renders the example; both schema checks pass."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chute",
            "render",
            str(REPO / "examples/hello-world/api.yaml"),
            "--cluster",
            str(DATA / "cluster.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    validate_all(objects)
    assert {o["kind"] for o in objects} >= {"Deployment", "ScaledObject", "Service", "ConfigMap"}


def test_chute_render_reports_errors_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("namespace: 42x_\n")
    result = subprocess.run(
        [sys.executable, "-m", "chute", "render", str(REPO / "examples/hello-world/api.yaml"),
         "--cluster", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3  # a configuration problem (docs/cli.md)
    assert result.stdout == ""
    assert f"chute render: {bad}: $.namespace: expected lowercase letters" in result.stderr


def test_without_chute_k8s_the_cli_names_the_extra() -> None:
    import argparse

    from chute.cli import CommandRegistrar, _missing_command
    from chute.install import install_line

    commands = CommandRegistrar(argparse.ArgumentParser(prog="chute"))
    commands.add("validate", run=lambda args: 0, help="check an API configuration file")
    assert _missing_command(commands, ["render", "api.yaml"]) == (
        f"chute: 'render' comes with chute[k8s]; install it with: {install_line('k8s')}"
    )
    assert _missing_command(commands, ["validate"]) is None


def test_dockerfile_installs_every_package() -> None:
    """The image's pip install names each workspace package that ``chute[all]`` needs."""
    text = (REPO / "packages/k8s/Dockerfile").read_text()
    for package in ("core", "dequeuer", "backends-redis", "backends-sqs", "backends-gcs", "k8s"):
        assert f"./packages/{package}" in text
        assert (REPO / "packages" / package / "pyproject.toml").exists()
    assert '"./packages/core[all]"' in text
