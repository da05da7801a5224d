"""Object names and labels: one place, so rendering, pruning and status agree."""

from __future__ import annotations

import hashlib

from chute._version import __version__
from chute.config import API, dump_apis
from chute_k8s.cluster import Cluster

MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
API_LABEL = "chute.dev/api"
SPEC_HASH = "chute.dev/spec-hash"
#: The field manager of every server-side apply, and the value of the managed-by label.
FIELD_MANAGER = "chute"

#: Where the API file is mounted in the gateway and the dequeuers.
API_FILE_DIR = "/chute/api"
API_FILE_KEY = "api.yaml"
API_FILE = f"{API_FILE_DIR}/{API_FILE_KEY}"
#: Cortex's client config location inside user containers.
CLIENT_CONFIG_DIR = "/cortex/client"


def deployment(api: API | str) -> str:
    """``api-<name>``, as Cortex named it."""
    return f"api-{api if isinstance(api, str) else api.name}"


def gateway(cluster: Cluster) -> str:
    return f"{cluster.name}-gateway"


def apis_configmap(cluster: Cluster) -> str:
    return f"{cluster.name}-apis"


def client_configmap(cluster: Cluster) -> str:
    return f"{cluster.name}-client-config"


def dashboard_configmap(cluster: Cluster) -> str:
    return f"{cluster.name}-dashboard"


def selector(cluster: Cluster, component: str, api: API | None = None) -> dict[str, str]:
    """Labels a Deployment selects its pods by (immutable: nothing that changes goes here)."""
    labels = {INSTANCE: cluster.name, COMPONENT: component}
    if api is not None:
        labels[API_LABEL] = api.name
    return labels


def labels(cluster: Cluster, component: str, api: API | None = None) -> dict[str, str]:
    """Every label of an object chute renders (sorted, so the output is stable)."""
    out = dict(cluster.labels)
    out.update(
        {
            "app.kubernetes.io/name": "chute",
            "app.kubernetes.io/version": __version__,
            MANAGED_BY: FIELD_MANAGER,
            **selector(cluster, component, api),
        }
    )
    if api is not None:  # Cortex's labels, which its dashboards and log queries used
        out.update({"apiName": api.name, "apiKind": api.kind})
    return dict(sorted(out.items()))


def prune_selector(cluster: Cluster) -> str:
    """The label selector of everything ``chute deploy`` owns in the namespace."""
    return f"{MANAGED_BY}={FIELD_MANAGER},{INSTANCE}={cluster.name}"


def spec_hash(text: str) -> str:
    """A short digest put on a pod template, so that a change of what the pods read from a
    ConfigMap (not visible in the pod spec) still rolls them."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def api_hash(api: API) -> str:
    return spec_hash(dump_apis([api]))
