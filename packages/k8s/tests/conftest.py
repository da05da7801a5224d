from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from chute.backends import _sqlite as sqlite
from chute.config import API, loads_apis
from chute.registry import PluginManager
from chute_k8s.cluster import Cluster, load_cluster
from chute_k8s.render import render
from chute_redis import plugin as redis_plugin

sys.path.insert(0, str(Path(__file__).parent))  # schemas.py, apiserver.py

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def manager() -> PluginManager:
    """A plugin manager with exactly the first-party queue plugins these tests need, so the
    tests do not depend on what else is installed."""
    pm = PluginManager(load_entry_points=False)
    pm.register(sqlite, "sqlite")
    pm.register(redis_plugin, "redis")
    return pm


@pytest.fixture
def cluster() -> Cluster:
    return load_cluster(DATA / "cluster.yaml")


def one_api(text: str) -> list[API]:
    return loads_apis(text, file="api.yaml")


def by_kind(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return found[0]


def pod_of(objects: list[dict[str, Any]], api: str) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(objects, "Deployment", f"api-{api}")["spec"]["template"]["spec"]
    return spec


def containers(objects: list[dict[str, Any]], api: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_of(objects, api)["containers"]}


__all__ = ["REPO", "by_kind", "containers", "one_api", "pod_of", "render"]
