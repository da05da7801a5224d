"""Validate rendered objects: built-in kinds against the official Kubernetes JSON schema
(kubernetes-validate, strict: unknown fields fail), KEDA's against its CRDs' openAPIV3Schema."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

#: The Kubernetes version whose schema the objects must pass.
KUBERNETES_VERSION = "1.37.0"
DATA = Path(__file__).parent / "data"
CRD_FILES = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}
#: The Prometheus operator's kinds: no CRD is at hand offline, so only their metadata is
#: checked against the Kubernetes schema (as a ConfigMap's).
MONITORING = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((DATA / CRD_FILES[kind]).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def validate(obj: dict[str, Any]) -> None:
    """Raise if ``obj`` does not validate."""
    kind = obj["kind"]
    if obj["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(obj, crd_schema(kind), cls=jsonschema.Draft7Validator)
        spec = obj["spec"]
        if kind == "ScaledObject":  # the CRD's CEL rule, which jsonschema cannot run
            assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
            for trigger in spec["triggers"]:  # scaler metadata is all strings
                assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger
        return
    if kind in MONITORING:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert isinstance(obj["spec"], dict)
        probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        kubernetes_validate.validate(probe, KUBERNETES_VERSION, strict=True)
        return
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def validate_all(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        try:
            validate(obj)
        except Exception as exc:
            raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {exc}") from exc
