"""What ``render`` makes of API files: each case also passes both schema checks."""

from __future__ import annotations

import msgspec
import pytest
from conftest import REPO, by_kind, containers, one_api, pod_of
from schemas import validate_all

from chute.config import load_apis
from chute.errors import ConfigError
from chute.registry import PluginManager
from chute_k8s.cluster import Cluster, loads_cluster
from chute_k8s.output import to_yaml
from chute_k8s.render import render

CPU_API = """
- name: cpu-api
  kind: AsyncAPI
  pod:
    port: 9000
    max_concurrency: 3
    containers:
      - name: api
        image: registry.example.com/cpu:1
        command: [python, -m, app]
        args: ["--port", "$(CORTEX_PORT)"]
        env: {ZETA: "1", ALPHA: "2"}
        compute: {cpu: 1, mem: 1Gi}
        readiness_probe: {http_get: {port: 9000, path: /ready}}
        liveness_probe:
          http_get: {port: 9000, path: /live}
          initial_delay_seconds: 5
          period_seconds: 7
          failure_threshold: 4
        pre_stop: {exec: {command: [sleep, "5"]}}
  autoscaling:
    min_replicas: 2
    max_replicas: 9
    init_replicas: 3
    target_in_flight: 6
    window: 30s
    downscale_stabilization_period: 2m
    upscale_stabilization_period: 20s
    max_downscale_factor: 0.5
    max_upscale_factor: 3
    downscale_tolerance: 0.1
    upscale_tolerance: 0.02
  update_strategy: {max_surge: 1, max_unavailable: "0%"}
"""


def test_cpu_api(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(one_api(CPU_API), cluster, manager=manager)
    validate_all(objects)
    deployment = by_kind(objects, "Deployment", "api-cpu-api")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 1,
        "maxUnavailable": "0%",
    }
    pod = pod_of(objects, "cpu-api")
    assert [c["name"] for c in pod["containers"]] == ["api", "dequeuer"]  # the sidecar last
    api = containers(objects, "cpu-api")["api"]
    assert api["command"] == ["python", "-m", "app"]
    assert api["args"] == ["--port", "$(CORTEX_PORT)"]
    assert [(e["name"], e["value"]) for e in api["env"]] == [
        ("CORTEX_VERSION", "0.1.0"),
        ("CORTEX_CLI_CONFIG_DIR", "/cortex/client"),
        ("CORTEX_PORT", "9000"),
        ("CHUTE_GATEWAY_URL", "http://chute-gateway.chute-test.svc:8888"),
        ("ALPHA", "2"),
        ("ZETA", "1"),
    ]
    assert api["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert "readinessProbe" not in api  # the dequeuer runs it
    assert api["livenessProbe"] == {
        "httpGet": {"path": "/live", "port": 9000},
        "initialDelaySeconds": 5,
        "timeoutSeconds": 1,
        "periodSeconds": 7,
        "successThreshold": 1,
        "failureThreshold": 4,
    }
    assert api["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    assert {"name": "mnt", "mountPath": "/mnt"} in api["volumeMounts"]
    assert {
        "name": "client-config",
        "mountPath": "/cortex/client/cli.yaml",
        "subPath": "cli.yaml",
        "readOnly": True,
    } in api["volumeMounts"]
    # Node selection and tolerations from the cluster file; no accelerator tolerations.
    assert pod["nodeSelector"] == {"workload": "true"}
    assert pod["tolerations"] == [
        {"key": "workload", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert "affinity" not in pod
    assert pod["terminationGracePeriodSeconds"] == 75  # grace 45 + 30
    assert pod["imagePullSecrets"] == [{"name": "registry"}]


def test_dequeuer_sidecar_exactly(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(one_api(CPU_API), cluster, manager=manager)
    dequeuer = containers(objects, "cpu-api")["dequeuer"]
    assert dequeuer["resources"] == {"requests": {"cpu": "100m", "memory": "100Mi"}}
    assert dequeuer["command"] == ["chute-dequeuer"]
    assert dequeuer["args"] == [
        "--api-file", "/chute/api/api.yaml",
        "--api", "cpu-api",
        "--user-port", "9000",
        "--workers", "3",
        "--admin-port", "15000",
        "--admin-host", "0.0.0.0",
        "--queue", "redis://redis.chute-test.svc:6379/0",
        "--store", "redis://redis.chute-test.svc:6379/0",
        "--grace-period", "45",
        "--lease", "20",
    ]  # fmt: skip
    assert dequeuer["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 15000}
    assert dequeuer["ports"] == [{"name": "admin", "containerPort": 15000, "protocol": "TCP"}]
    assert dequeuer["envFrom"] == [{"secretRef": {"name": "chute-credentials", "optional": True}}]
    assert {"name": "mnt", "mountPath": "/mnt"} in dequeuer["volumeMounts"]
    assert {"name": "api-file", "mountPath": "/chute/api", "readOnly": True} in dequeuer[
        "volumeMounts"
    ]
    template = by_kind(objects, "Deployment", "api-cpu-api")["spec"]["template"]["metadata"]
    assert template["annotations"]["prometheus.io/scrape"] == "true"
    assert template["annotations"]["prometheus.io/port"] == "15000"


def test_the_dequeuer_accepts_its_rendered_flags(
    cluster: Cluster, manager: PluginManager, tmp_path: object
) -> None:
    """The args are the real CLI's: its parser takes them and the settings resolve against
    the API file the ConfigMap carries."""
    from pathlib import Path

    from chute_dequeuer.cli import build_parser
    from chute_dequeuer.settings import resolve

    objects = render(one_api(CPU_API), cluster, manager=manager)
    assert isinstance(tmp_path, Path)
    api_file = tmp_path / "api.yaml"
    api_file.write_text(by_kind(objects, "ConfigMap", "chute-apis")["data"]["api.yaml"])
    args = containers(objects, "cpu-api")["dequeuer"]["args"]
    args[args.index("--api-file") + 1] = str(api_file)
    parsed = build_parser().parse_args(args)
    settings = resolve(
        api_file=parsed.api_file,
        api_name=parsed.api,
        queue_url=parsed.queue,
        store_url=parsed.store,
        user_port=parsed.user_port,
        workers=parsed.workers,
        admin_port=parsed.admin_port,
        grace_period=parsed.grace_period,
        lease=parsed.lease,
    )
    assert (settings.user_port, settings.workers, settings.lease) == (9000, 3, 20.0)
    assert settings.api.pod.containers[0].readiness_probe is not None


def test_autoscaling_maps_onto_keda(cluster: Cluster, manager: PluginManager) -> None:
    scaled = by_kind(render(one_api(CPU_API), cluster, manager=manager), "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "api-cpu-api"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 9)
    assert spec["pollingInterval"] == 10
    assert spec["cooldownPeriod"] == 120
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 20
    assert behavior["scaleDown"]["policies"][0] == {
        "type": "Percent",
        "value": 50,
        "periodSeconds": 10,
    }
    assert behavior["scaleUp"]["policies"][0]["value"] == 200
    assert behavior["scaleDown"]["tolerance"] == "0.1"
    assert behavior["scaleUp"]["tolerance"] == "0.02"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["threshold"] == "6"
    assert trigger["metadata"]["query"] == (
        'max(avg_over_time(cortex_async_in_flight{api_name="cpu-api", '
        'namespace="chute-test"}[30s]))'
    )


GPU_API = """
- name: gpu-api
  kind: AsyncAPI
  pod:
    containers:
      - name: model
        image: registry.example.com/gpu:1
        compute: {cpu: 2, gpu: 1, mem: 8Gi, shm: 1Gi}
  node_groups: [gpu-pool]
"""


def test_gpu_shm_and_node_groups(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(one_api(GPU_API), cluster, manager=manager)
    validate_all(objects)
    model = containers(objects, "gpu-api")["model"]
    assert model["resources"] == {
        "limits": {"nvidia.com/gpu": "1"},
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
    }
    assert {"name": "dshm-model", "mountPath": "/dev/shm"} in model["volumeMounts"]
    pod = pod_of(objects, "gpu-api")
    assert {
        "name": "dshm-model",
        "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"},
    } in pod["volumes"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "cloud.google.com/gke-nodepool", "operator": "In", "values": ["gpu-pool"]}
            ]
        }
    ]


INF_API = """
- name: inf-api
  kind: AsyncAPI
  pod:
    containers:
      - name: neuron
        image: registry.example.com/inf:1
        compute: {cpu: 1, inf: 2, mem: 4Gi}
"""


def test_inferentia(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(one_api(INF_API), cluster, manager=manager)
    validate_all(objects)
    neuron = containers(objects, "inf-api")["neuron"]
    assert neuron["resources"] == {
        "limits": {"aws.amazon.com/neuron": "2", "hugepages-2Mi": "512Mi"},
        "requests": {
            "cpu": "1",
            "memory": "4Gi",
            "aws.amazon.com/neuron": "2",
            "hugepages-2Mi": "512Mi",
        },
    }
    assert neuron["securityContext"] == {"capabilities": {"add": ["SYS_ADMIN", "IPC_LOCK"]}}
    tolerations = pod_of(objects, "inf-api")["tolerations"]
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in (
        tolerations
    )
    assert not any(t.get("key") == "nvidia.com/gpu" for t in tolerations)


MULTI_API = """
- name: multi
  kind: AsyncAPI
  pod:
    port: 8000
    containers:
      - name: web
        image: registry.example.com/web:1
        readiness_probe: {tcp_socket: {port: 8000}}
      - name: worker
        image: registry.example.com/worker:1
        compute: {cpu: 500m, mem: 256Mi}
        readiness_probe: {http_get: {port: 9090, path: /ok}}
        pre_stop: {http_get: {port: 9090, path: /drain}}
"""


def test_multi_container(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(one_api(MULTI_API), cluster, manager=manager)
    validate_all(objects)
    found = containers(objects, "multi")
    assert list(found) == ["web", "worker", "dequeuer"]
    for name in ("web", "worker"):  # every container knows the pod's port and shares /mnt
        env = {e["name"]: e["value"] for e in found[name]["env"]}
        assert env["CORTEX_PORT"] == "8000"
        assert {"name": "mnt", "mountPath": "/mnt"} in found[name]["volumeMounts"]
        assert "readinessProbe" not in found[name]
    assert found["worker"]["lifecycle"] == {
        "preStop": {"httpGet": {"path": "/drain", "port": 9090}}
    }
    assert found["web"]["resources"] == {"requests": {"cpu": "200m"}}  # Cortex's default cpu
    assert "--user-port" in found["dequeuer"]["args"]
    assert found["dequeuer"]["args"][found["dequeuer"]["args"].index("--user-port") + 1] == "8000"


ZERO_API = """
- name: zero
  kind: AsyncAPI
  pod:
    containers: [{name: api, image: registry.example.com/z:1}]
  autoscaling: {min_replicas: 0, max_replicas: 4}
"""


def test_scale_to_zero(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(one_api(ZERO_API), cluster, manager=manager)
    validate_all(objects)
    spec = by_kind(objects, "ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 4)
    assert spec["triggers"][0]["metadata"]["activationThreshold"] == "0"
    assert by_kind(objects, "Deployment", "api-zero")["spec"]["replicas"] == 0


def test_namespace_objects(cluster: Cluster, manager: PluginManager) -> None:
    apis = one_api(CPU_API + ZERO_API)
    objects = render(apis, cluster, manager=manager)
    validate_all(objects)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [
        ("ConfigMap", "chute-apis"),
        ("ConfigMap", "chute-client-config"),
        ("Deployment", "chute-gateway"),
        ("Service", "chute-gateway"),
        ("HorizontalPodAutoscaler", "chute-gateway"),
        ("Namespace", "istio-system"),
        ("Service", "ingressgateway-apis"),
        ("TriggerAuthentication", "chute-aws"),
        ("ConfigMap", "chute-dashboard"),
        ("ServiceMonitor", "chute-gateway"),
        ("PodMonitor", "chute-dequeuers"),
        ("PrometheusRule", "chute-alerts"),
        ("Deployment", "api-cpu-api"),
        ("ScaledObject", "api-cpu-api"),
        ("Deployment", "api-zero"),
        ("ScaledObject", "api-zero"),
    ]
    # The API file the pods read is the normalised file; it loads back to the same APIs.
    from chute.config import loads_apis

    text = by_kind(objects, "ConfigMap", "chute-apis")["data"]["api.yaml"]
    assert loads_apis(text) == sorted(apis, key=lambda a: a.name)
    client = msgspec.yaml.decode(
        by_kind(objects, "ConfigMap", "chute-client-config")["data"]["cli.yaml"]
    )
    assert client == {
        "default_environment": "default",
        "environments": [
            {"name": "default", "operator_endpoint": "http://chute-gateway.chute-test.svc:8888"}
        ],
    }
    gateway = by_kind(objects, "Deployment", "chute-gateway")["spec"]["template"]["spec"]
    (container,) = gateway["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["args"][:2] == ["gateway", "/chute/api/api.yaml"]
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 90
    assert by_kind(objects, "ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"
    dashboard = msgspec.json.decode(
        by_kind(objects, "ConfigMap", "chute-dashboard")["data"]["chute.json"]
    )
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Queue depth", "Container latency", "Failures by reason", "Replicas"} <= titles
    rules = by_kind(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [
        "ChuteQueueGrowingWithoutReplicas",
        "ChuteFailureRatioHigh",
        "ChuteQueueStalled",
    ]


def test_cortex_in_cluster_address_reaches_the_gateway(
    cluster: Cluster, manager: PluginManager
) -> None:
    """A container chaining by Cortex's URL (the seed's example),
    ``http://ingressgateway-apis.istio-system.svc.cluster.local/<api>``, reaches chute's gateway:
    an ExternalName to the gateway Service, which answers on port 80 too."""
    objects = render(one_api(CPU_API), cluster, manager=manager)
    validate_all(objects)
    alias = by_kind(objects, "Service", "ingressgateway-apis")
    assert alias["metadata"]["namespace"] == "istio-system"
    assert alias["spec"] == {
        "type": "ExternalName",
        "externalName": "chute-gateway.chute-test.svc.cluster.local",
    }
    ports = by_kind(objects, "Service", "chute-gateway")["spec"]["ports"]
    assert {(p["port"], p["targetPort"]) for p in ports} == {(8888, "http"), (80, "http")}
    assert by_kind(objects, "Namespace", "istio-system")["metadata"] == {"name": "istio-system"}

    # Where the cluster runs Istio, that name is Istio's: the cluster file leaves it out.
    istio = msgspec.structs.replace(
        cluster, gateway=msgspec.structs.replace(cluster.gateway, cortex_address=False)
    )
    objects = render(one_api(CPU_API), istio, manager=manager)
    assert not [o for o in objects if o["kind"] == "Namespace"]
    assert not [o for o in objects if o["metadata"]["name"] == "ingressgateway-apis"]
    ports = by_kind(objects, "Service", "chute-gateway")["spec"]["ports"]
    assert [p["port"] for p in ports] == [8888]


def test_a_spec_change_rolls_the_pods(cluster: Cluster, manager: PluginManager) -> None:
    """A readiness probe lives in the mounted API file, not the pod spec: the hash sees it."""
    before = render(one_api(MULTI_API), cluster, manager=manager)
    after = render(one_api(MULTI_API.replace("/ok", "/ready")), cluster, manager=manager)

    def hashes(objects: list[dict[str, object]]) -> tuple[str, str]:
        api = by_kind(objects, "Deployment", "api-multi")
        gw = by_kind(objects, "Deployment", "chute-gateway")
        return tuple(
            d["spec"]["template"]["metadata"]["annotations"]["chute.dev/spec-hash"]
            for d in (api, gw)
        )

    old, new = hashes(before), hashes(after)
    assert old[0] != new[0]
    assert old[1] != new[1]


def test_output_is_byte_stable(cluster: Cluster, manager: PluginManager) -> None:
    apis = one_api(CPU_API + GPU_API + MULTI_API)
    first = to_yaml(render(apis, cluster, manager=manager))
    again = to_yaml(render(list(reversed(apis)), cluster, manager=manager))
    assert first == again
    assert first.startswith("---\napiVersion: v1\nkind: ConfigMap\n")
    assert "&id" not in first
    assert "*id" not in first


def test_hello_world_example(cluster: Cluster, manager: PluginManager) -> None:
    objects = render(load_apis(REPO / "examples/hello-world/api.yaml"), cluster, manager=manager)
    validate_all(objects)
    assert containers(objects, "hello-world")["dequeuer"]["resources"] == {
        "requests": {"cpu": "100m", "memory": "100Mi"}
    }


# --- rejected before anything is rendered ----------------------------------------------------


class _Spy:
    """A plugin that records whether rendering reached the hooks."""

    def __init__(self) -> None:
        self.called = False

    from chute import hookimpl

    @hookimpl
    def chute_k8s_objects(self, objects: list[dict[str, object]]) -> None:
        self.called = True


@pytest.mark.parametrize(
    ("api_text", "message"),
    [
        (
            GPU_API.replace("gpu-pool", "tpu-pool"),
            "$[0].node_groups[0]: expected one of the cluster file's node_groups",
        ),
        (
            INF_API.replace("cpu: 1, inf: 2, mem: 4Gi", "cpu: null, inf: 1"),
            "Inferentia needs huge pages",
        ),
        (
            GPU_API.replace("mem: 8Gi, shm: 1Gi", "shm: 1Gi"),
            "compute.shm: a memory-backed /dev/shm counts against the container's memory",
        ),
    ],
)
def test_invalid_combinations(
    cluster: Cluster, manager: PluginManager, api_text: str, message: str
) -> None:
    spy = _Spy()
    manager.register(spy, "spy")
    with pytest.raises(ConfigError) as caught:
        render(one_api(api_text), cluster, manager=manager, file="api.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("api.yaml: $[0]")
    assert not spy.called


def test_every_problem_is_reported_at_once(cluster: Cluster, manager: PluginManager) -> None:
    text = GPU_API.replace("gpu-pool", "tpu-pool").replace("mem: 8Gi, shm: 1Gi", "shm: 1Gi")
    with pytest.raises(ConfigError) as caught:
        render(one_api(text), cluster, manager=manager)
    assert len(str(caught.value).splitlines()) == 2


def test_embedded_sqlite_queue_cannot_autoscale(manager: PluginManager) -> None:
    cluster = loads_cluster("queue_url: sqlite:///chute.db\n")
    with pytest.raises(ConfigError, match="cannot be autoscaled there"):
        render(one_api(ZERO_API), cluster, manager=manager)


def test_a_queue_without_a_trigger_says_so(manager: PluginManager) -> None:
    from chute.registry import BackendRegistry

    class Other:
        from chute import hookimpl

        @hookimpl
        def chute_register_backends(self, registry: BackendRegistry) -> None:
            registry.add_queue("nats", lambda url: None)  # type: ignore[arg-type,return-value]

    manager.register(Other(), "nats")
    cluster = loads_cluster("queue_url: nats://nats:4222\n")
    with pytest.raises(
        ConfigError, match=r"no installed plugin supplies a KEDA trigger for nats://"
    ):
        render(one_api(ZERO_API), cluster, manager=manager)
