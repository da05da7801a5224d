"""A Cortex project runs unchanged in ``chute dev``: an API file without ``command``, the
Dockerfile Cortex built the image from, and the app (Cortex's test/apis/async/hello-world
layout). chute dev takes the start from the Dockerfile; real processes, results over HTTP."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from e2e_support import (
    PATIENCE,
    PY,
    ROOT,
    Processes,
    start_chute_dev,
    submit_to,
    wait_for,
)

from chute import _dev as dev
from chute.testing import free_port

API_FILE = """\
- name: hello-world
  kind: AsyncAPI
  pod:
    port: 8080
    containers:
    - name: api
      image: quay.io/cortexlabs-test/async-hello-world-cpu:latest
      readiness_probe:
        http_get:
          path: "/healthz"
          port: 8080
      compute:
        cpu: 200m
        mem: 128Mi
"""

DOCKERFILE = """\
FROM python:3.8-slim

# Allow statements and log messages to immediately appear in the logs
ENV PYTHONUNBUFFERED True

COPY app /app
WORKDIR /app/
ENV PYTHONPATH=/app
ENV CORTEX_PORT=8080

CMD uvicorn --workers 1 --host 0.0.0.0 --port $CORTEX_PORT main:app
"""

# Cortex's app is FastAPI; the same routes as a plain ASGI app, so the test needs nothing more.
MAIN = """\
import json
import os

response_str = os.getenv("RESPONSE", "hello world")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["method"] == "GET" and scope["path"] == "/healthz":
        body, kind = b"ok", b"text/plain"
    else:
        body = json.dumps({"message": response_str, "cwd": os.getcwd()}).encode()
        kind = b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})
"""


def cortex_project(root: Path, *, dockerfile: str = DOCKERFILE) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text(MAIN)
    (root / "app" / "requirements.txt").write_text("fastapi\nuvicorn[standard]\n")
    (root / "cpu.Dockerfile").write_text(dockerfile)
    (root / "build-cpu.sh").write_text("# how Cortex built it; chute dev does not need it\n")
    api_file = root / "cortex_cpu.yaml"
    api_file.write_text(API_FILE)
    return api_file


def test_a_cortex_project_runs_unchanged(
    processes: Processes, tmp_path: Path, backend: str
) -> None:
    api_file = cortex_project(tmp_path / "hello-world")
    dev = start_chute_dev(
        processes, api_file, tmp_path / "state", "--queue", backend, "--store", backend
    )
    dev.wait_ready()
    ids = [submit_to(dev.url, "hello-world", {"n": i}) for i in range(3)]
    for request_id in ids:
        body = wait_for(dev.url, "hello-world", request_id)
        assert body["status"] == "completed", body
        # In the image, WORKDIR /app/ holds COPY app /app: here, the project's app folder.
        assert body["result"] == {
            "message": "hello world",
            "cwd": str((tmp_path / "hello-world" / "app").resolve()),
        }
        assert uuid.UUID(request_id).version == 7  # a UUID, as Cortex's ids were


def test_a_file_mixing_kinds_runs_its_async_apis(
    processes: Processes, tmp_path: Path, backend: str
) -> None:
    api_file = cortex_project(tmp_path / "hello-world")
    api_file.write_text(REALTIME + API_FILE)  # a Cortex file of several kinds
    dev = start_chute_dev(
        processes, api_file, tmp_path / "state", "--queue", backend, "--store", backend
    )
    dev.wait_ready()
    assert "$[0]: skipped RealtimeAPI 'text-generator'" in dev.proc.output()
    request_id = submit_to(dev.url, "hello-world", {"n": 1})
    assert wait_for(dev.url, "hello-world", request_id)["status"] == "completed"


def test_a_legacy_cortex_api_file_says_what_to_change(tmp_path: Path, backend: str) -> None:
    api_file = cortex_project(tmp_path / "p")
    api_file.write_text(LEGACY)
    done = subprocess.run(
        [PY, "-m", "chute", "dev", str(api_file), "--state-dir", str(tmp_path / "s")]
        + ["--queue", backend, "--store", backend],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode == 3
    assert "$[1].predictor: this is Cortex's API format from before v0.36" in done.stderr
    assert "pod.containers" in done.stderr


REALTIME = """\
- name: text-generator
  kind: RealtimeAPI
  pod:
    port: 9000
    containers:
    - name: api
      image: quay.io/cortexlabs-test/realtime-text-generator-cpu:latest
"""

# Cortex's format before v0.36 (a Python predictor, no container).
LEGACY = """\
- name: iris-classifier
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  compute:
    cpu: 200m
- name: hello-world
  kind: AsyncAPI
  predictor:
    type: python
    path: predictor.py
"""


def test_attach_feeds_a_server_the_user_runs(processes: Processes, tmp_path: Path) -> None:
    api_file = cortex_project(tmp_path / "hello-world")
    port = free_port()
    processes.start(
        "my-server",
        [PY, "-m", "uvicorn", "main:app", "--port", str(port)],
        cwd=tmp_path / "hello-world" / "app",
        env={"RESPONSE": "from my debugger"},
    )
    dev = start_chute_dev(
        processes, api_file, tmp_path / "state", "--attach", f"hello-world=http://127.0.0.1:{port}"
    )
    dev.wait_ready()
    assert set(dev.child_pids()) == {"gateway", "hello-world/dequeuer"}  # no container started
    request_id = submit_to(dev.url, "hello-world", {"n": 1})
    body = wait_for(dev.url, "hello-world", request_id)
    assert body["status"] == "completed", body
    assert body["result"]["message"] == "from my debugger"


def test_a_program_the_image_installs_but_this_machine_lacks_is_named(tmp_path: Path) -> None:
    api_file = cortex_project(
        tmp_path / "p",
        dockerfile=DOCKERFILE.replace(
            "CMD uvicorn", "RUN pip install -r /app/requirements.txt\nCMD no-such-server-xyz"
        ),
    )
    done = subprocess.run(
        [PY, "-m", "chute", "dev", str(api_file), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode != 0
    assert "'no-such-server-xyz', which is not installed here" in done.stderr
    requirements = (tmp_path / "p" / "app" / "requirements.txt").resolve()
    assert f"pip install -r {requirements}" in done.stderr


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--attach", "hello-world=http://10.0.0.1:80"], "server on this machine"),
        (["--attach", "nope=8080"], "has no API 'nope'"),
        (["--dockerfile", "nope=x.Dockerfile"], "has no container 'nope'"),
    ],
)
def test_wrong_attach_and_dockerfile_options_are_refused(
    tmp_path: Path, flag: list[str], message: str
) -> None:
    api_file = cortex_project(tmp_path / "p")
    done = subprocess.run(
        [PY, "-m", "chute", "dev", str(api_file), "--state-dir", str(tmp_path / "s"), *flag],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode != 0
    assert message in done.stderr


def test_the_iris_classifier_example_runs_unchanged(processes: Processes, tmp_path: Path) -> None:
    example = ROOT / "examples" / "iris-classifier"
    dev = start_chute_dev(processes, example / "cortex.yaml", tmp_path / "state")
    dev.wait_ready()
    sample = json.loads((example / "sample.json").read_text())
    versicolor = {"sepal_length": 6.0, "sepal_width": 2.9, "petal_length": 4.5, "petal_width": 1.5}
    ids = [submit_to(dev.url, "iris-classifier", s) for s in (sample, versicolor)]
    answers = [wait_for(dev.url, "iris-classifier", i) for i in ids]
    assert [a["status"] for a in answers] == ["completed", "completed"], answers
    assert [a["result"]["prediction"] for a in answers] == ["setosa", "versicolor"]
    for answer in answers:
        probabilities = answer["result"]["probabilities"]
        assert set(probabilities) == {"setosa", "versicolor", "virginica"}
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    # A sample without the four measurements fails with the container's reason.
    bad = wait_for(dev.url, "iris-classifier", submit_to(dev.url, "iris-classifier", {"x": 1}))
    assert bad["status"] == "failed"
    assert bad["error"]["status_code"] == 400


# -- --runtime docker | podman ----------------------------------------------------------------


def test_the_docker_runtime_builds_the_image_and_runs_it_as_a_pod_would(tmp_path: Path) -> None:
    """What chute dev hands the engine (this test needs none): the build from the Dockerfile, and
    a run publishing pod.port on a free local port with /mnt and Cortex's environment."""
    api_file = cortex_project(tmp_path / "hello-world")
    setup = dev.plan(api_file, state_dir=tmp_path / "state", port=0, runtime="docker")
    assert setup.builds == [
        [
            "docker",
            "build",
            "--file",
            str(tmp_path / "hello-world" / "cpu.Dockerfile"),
            "--tag",
            "chute-dev/hello-world-api:latest",
            str(tmp_path / "hello-world"),
        ]
    ]
    [container] = [p for p in setup.processes if p.role == "container"]
    argv = container.argv
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[-1] == "chute-dev/hello-world-api:latest"  # the image's own CMD runs
    local_port = setup.apis[0].port
    assert f"127.0.0.1:{local_port}:8080" in argv  # the pod's port, published locally
    assert f"{setup.mnt}:/mnt" in argv
    env = {argv[i + 1] for i, word in enumerate(argv) if word == "--env"}
    assert {"CORTEX_PORT=8080", "CHUTE_MNT=/mnt"} <= env
    gateway = setup.gateway_url.replace("127.0.0.1", "host.docker.internal")
    assert f"CHUTE_GATEWAY_URL={gateway}" in env
    # The dequeuer and its probes use the published port.
    assert setup.local_apis[0].pod.port == local_port


def engine_answers(runtime: str) -> str | None:
    """None when ``runtime``'s engine answers, else why not."""
    try:
        done = subprocess.run(
            [runtime, "info"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{runtime} info: {exc}"
    return None if done.returncode == 0 else f"{runtime} info: {done.stderr.strip()[-200:]}"


def test_without_an_engine_the_docker_runtime_says_so(tmp_path: Path) -> None:
    if engine_answers("docker") is None:
        pytest.skip("a Docker engine answers here: the refusal cannot be shown")
    api_file = cortex_project(tmp_path / "p")
    done = subprocess.run(
        [PY, "-m", "chute", "dev", str(api_file), "--state-dir", str(tmp_path / "s")]
        + ["--runtime", "docker"],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert done.returncode != 0
    assert "--runtime docker:" in done.stderr
    assert not (tmp_path / "s" / "dev.json").exists()  # nothing started


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_a_cortex_project_runs_in_its_image(
    processes: Processes, tmp_path: Path, runtime: str
) -> None:
    reason = engine_answers(runtime)
    if reason is not None:
        pytest.skip(f"--runtime {runtime} needs a {runtime} engine: {reason}")
    api_file = cortex_project(tmp_path / "hello-world")
    (tmp_path / "hello-world" / "cpu.Dockerfile").write_text(
        DOCKERFILE.replace("COPY app /app", "RUN pip install uvicorn\nCOPY app /app")
    )
    chute = start_chute_dev(processes, api_file, tmp_path / "state", "--runtime", runtime)
    chute.wait_ready(timeout=600)
    request_id = submit_to(chute.url, "hello-world", {"n": 1})
    body = wait_for(chute.url, "hello-world", request_id)
    assert body["status"] == "completed", body
    assert body["result"] == {"message": "hello world", "cwd": "/app"}


# -- chaining by Cortex's in-cluster URL --------------------------------------------------------

CHAIN_API_FILE = """\
- name: first
  kind: AsyncAPI
  pod:
    containers:
      - name: api
        image: example/first:1
        command: ["python", "-m", "uvicorn", "chain:app", "--port", "$(CORTEX_PORT)"]
        env: {OUTSIDE_URL: "__OUTSIDE__"}
        readiness_probe: {tcp_socket: {port: 8080}, period_seconds: 1}
- name: second
  kind: AsyncAPI
  pod:
    containers:
      - name: api
        image: example/second:1
        command: ["python", "-m", "uvicorn", "chain:app", "--port", "$(CORTEX_PORT)"]
        readiness_probe: {tcp_socket: {port: 8080}, period_seconds: 1}
"""

# The seed's chaining example, as a Cortex container writes it: submit to another API by
# Cortex's own gateway URL, then read its result there. Plain urllib: it honours HTTP_PROXY.
CHAIN_APP = """\
import asyncio
import json
import os
import urllib.request

CORTEX = "http://ingressgateway-apis.istio-system.svc.cluster.local"


def chain(text):
    submit = urllib.request.Request(
        CORTEX + "/second", data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    request_id = json.load(urllib.request.urlopen(submit, timeout=30))["id"]
    for _ in range(600):
        body = json.load(urllib.request.urlopen(f"{CORTEX}/second/{request_id}", timeout=30))
        if body["status"] == "completed":
            break
        import time; time.sleep(0.05)
    outside = urllib.request.urlopen(os.environ["OUTSIDE_URL"], timeout=30).read().decode()
    return {"chained": body["result"], "outside": outside}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = json.loads(body)["text"]
    if "OUTSIDE_URL" in os.environ:
        answer = await asyncio.get_running_loop().run_in_executor(None, chain, text)
    else:
        answer = {"upper": text.upper()}
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
"""


def test_a_container_chains_by_cortexs_in_cluster_url(
    processes: Processes, tmp_path: Path, backend: str
) -> None:
    # Something a container calls that is neither the gateway nor local to NO_PROXY
    # (127.0.0.2 is loopback too): the proxy passes it on unchanged.
    outside_port = free_port()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "index.html").write_text("from outside")
    processes.start(
        "outside",
        [PY, "-m", "http.server", str(outside_port), "--bind", "127.0.0.2"],
        cwd=outside,
    )
    root = tmp_path / "chain"
    root.mkdir()
    (root / "chain.py").write_text(CHAIN_APP)
    api_file = root / "api.yaml"
    api_file.write_text(
        CHAIN_API_FILE.replace("__OUTSIDE__", f"http://127.0.0.2:{outside_port}/index.html")
    )
    chute = start_chute_dev(
        processes, api_file, tmp_path / "state", "--queue", backend, "--store", backend
    )
    chute.wait_ready()
    body = wait_for(chute.url, "first", submit_to(chute.url, "first", {"text": "hi"}))
    assert body["status"] == "completed", body
    assert body["result"] == {"chained": {"upper": "HI"}, "outside": "from outside"}
