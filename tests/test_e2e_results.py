"""Results that are not JSON, and multipart submits, end to end: a real gateway, dequeuer and
container under ``chute dev`` on SQLite and on Redis (cortexlabs/cortex#2386, #1959, #2420)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from e2e_support import Processes, start_chute_dev, submit_to, wait_for

import chute

# A container that answers an image for /render and echoes what a multipart body held.
APP = """\
import hashlib
import json


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = dict(scope["headers"])
    if scope["method"] == "GET":
        kind, answer = b"text/plain", b"ok"
    elif headers.get(b"x-want") == b"png":
        kind, answer = b"image/png", b"\\x89PNG\\r\\n\\x1a\\n" + body
    else:
        kind = b"application/json"
        answer = json.dumps({
            "content_type": headers.get(b"content-type", b"").decode(),
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": answer})
"""

API_FILE = """\
- name: render
  kind: AsyncAPI
  pod:
    containers:
      - name: api
        image: example/render:1
        command: ["python", "-m", "uvicorn", "app:app", "--port", "$(CORTEX_PORT)"]
        readiness_probe: {{tcp_socket: {{port: 8080}}, period_seconds: 1}}
  results:
    content_type: {content_type}
"""


def project(root: Path, content_type: str) -> Path:
    root.mkdir(parents=True)
    (root / "app.py").write_text(APP)
    api_file = root / "api.yaml"
    api_file.write_text(API_FILE.format(content_type=content_type))
    return api_file


def test_binary_results_and_multipart_submits(
    processes: Processes, tmp_path: Path, backend: str
) -> None:
    api_file = project(tmp_path / "render", "any")
    dev = start_chute_dev(
        processes, api_file, tmp_path / "state", "--queue", backend, "--store", backend
    )
    dev.wait_ready()
    with httpx.Client(base_url=dev.url, timeout=30) as http:
        pixels = bytes(range(256)) * 512
        submitted = http.post(
            "/render", content=pixels, headers={"X-Want": "png", "Content-Type": "image/raw"}
        )
        request_id = submitted.json()["id"]
        body = wait_for(dev.url, "render", request_id)
        assert body["status"] == "completed", body
        # Cortex's shape, with where the bytes are instead of an inline result.
        assert "result" not in body
        assert body["result_url"] == f"/render/{request_id}/result"
        assert body["result_type"] == "image/png"
        assert "timestamp" in body
        image = http.get(body["result_url"])
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content == b"\x89PNG\r\n\x1a\n" + pixels
        # The client: the fields, and the bytes with their type.
        with chute.Client(dev.url) as client:
            result = client.get("render", request_id)
            assert (result.result, result.result_type) == (None, "image/png")
            assert result.result_url == body["result_url"]
            read = client.result_bytes("render", request_id)
            assert read == (image.content, "image/png")

        # multipart/form-data reaches the container byte for byte, boundary and all.
        files = {"image": ("cat.png", b"\x89PNG" + bytes(1000), "image/png")}
        form = http.build_request("POST", "/render", files=files, data={"caption": "a cat"})
        raw = form.read()
        answer = http.send(form)
        assert answer.status_code == 200, answer.text
        echoed = wait_for(dev.url, "render", answer.json()["id"])
        assert echoed["status"] == "completed", echoed
        assert echoed["result"] == {
            "content_type": form.headers["content-type"],
            "size": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        assert echoed["result"]["content_type"].startswith("multipart/form-data; boundary=")
        # A JSON result is readable at …/result too, as the container's bytes.
        as_bytes = http.get(f"/render/{echoed['id']}/result")
        assert as_bytes.headers["content-type"] == "application/json"
        assert as_bytes.json() == echoed["result"]

        # Before it completes there is no result to read; an unknown id is not found.
        assert http.get("/render/no-such-id/result").status_code == 404


def test_without_the_opt_in_a_binary_answer_fails_as_in_cortex(
    processes: Processes, tmp_path: Path, backend: str
) -> None:
    api_file = project(tmp_path / "render", "json")
    dev = start_chute_dev(
        processes, api_file, tmp_path / "state", "--queue", backend, "--store", backend
    )
    dev.wait_ready()
    request_id = submit_to(dev.url, "render", {"x": 1})
    assert wait_for(dev.url, "render", request_id)["status"] == "completed"
    with httpx.Client(base_url=dev.url, timeout=30) as http:
        failed = http.post("/render", content=b"abc", headers={"X-Want": "png"}).json()["id"]
        body = wait_for(dev.url, "render", failed)
        assert body["status"] == "failed"
        assert body["error"]["type"] == "content_type"
        conflict = http.get(f"/render/{failed}/result")
        assert conflict.status_code == 409
        assert conflict.json()["error"]["type"] == "conflict"
