"""Issue 5's gateway features against real ``chute gateway`` processes, on SQLite and on Redis:
cancellation (DELETE), deadlines (headers, lazy expiry), Idempotency-Key, long-poll (?wait=),
API keys, the gateway's webhooks, the queue-depth route. The store and the queue are read back
through their own APIs on the same backend."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import backend_url, queued, run

from chute import open_store
from chute.gateway._controls import idempotent_id
from chute.protocol import RequestRecord, Status, now
from chute.testing import eventually, http
from chute.testing.gateway import GatewayProcess, gateway_process

API_FILE = """\
- name: hello
  kind: AsyncAPI
  webhook:
    request_urls: [https://example.invalid/hook, 127.0.0.1]
    private_targets: true
  pod:
    containers:
      - name: api
        image: hello:latest
- name: timed
  kind: AsyncAPI
  deadlines:
    queue: 1s
  pod:
    containers:
      - name: api
        image: timed:latest
- name: keyed
  kind: AsyncAPI
  auth:
    keys_env: KEYED_API_KEYS
  pod:
    containers:
      - name: api
        image: keyed:latest
"""

GLOBAL_KEY = "global-" + secrets.token_hex(8)
KEYED_KEY = "keyed-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def api_text() -> str:
    return API_FILE


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from backend_url(request, tmp_path_factory.mktemp("db"), "gwf")


@pytest.fixture(scope="module")
def gateway(api_file: Path, backend: str) -> Iterator[GatewayProcess]:
    """A gateway with no global keys (open) except for the ``keyed`` API."""
    with gateway_process(
        api_file, queue_url=backend, store_url=backend, env={"KEYED_API_KEYS": KEYED_KEY}
    ) as running:
        yield running
    assert running.returncode == 0


@pytest.fixture
def http_timeout() -> float:
    return 90  # long polls


def stored(url: str, api: str, request_id: str) -> RequestRecord | None:
    async def read() -> RequestRecord | None:
        async with open_store(url) as store:
            return await store.get(api, request_id)

    record: RequestRecord | None = run(read)
    return record


def move(url: str, api: str, request_id: str, *steps: Status, result: bytes = b"{}") -> None:
    """Play the dequeuer's part: move a request through ``steps`` (attempt 1)."""

    async def go() -> None:
        async with open_store(url) as store:
            for to in steps:
                await store.transition(
                    api,
                    request_id,
                    to,
                    attempt=1,
                    result=result if to is Status.COMPLETED else None,
                )

    run(go)


def submit(http: httpx.Client, api: str = "hello", **kwargs: Any) -> str:
    response = http.post(f"/{api}", **kwargs)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["id"]
    return request_id


def assert_error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    return body


# -- cancellation -----------------------------------------------------------------------------


def test_delete_cancels_a_queued_request(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, json={"x": 1})
    response = http.delete(f"/hello/{request_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == request_id
    assert body["status"] == "cancelled"
    assert "finished_at" in body
    record = stored(backend, "hello", request_id)
    assert record is not None
    assert record.status is Status.CANCELLED
    assert http.get(f"/hello/{request_id}").json()["status"] == "cancelled"
    # Cancelling again answers the same (DELETE is idempotent).
    again = http.delete(f"/hello/{request_id}")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


def test_delete_cancels_a_running_request(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, json={})
    move(backend, "hello", request_id, Status.IN_PROGRESS)
    response = http.delete(f"/hello/{request_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    record = stored(backend, "hello", request_id)
    assert record is not None
    assert record.status is Status.CANCELLED
    assert record.attempt == 1


def test_delete_of_a_finished_request_is_409(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, json={})
    move(backend, "hello", request_id, Status.IN_PROGRESS, Status.COMPLETED, result=b'{"a":1}')
    body = assert_error(http.delete(f"/hello/{request_id}"), 409, "conflict")
    assert "completed" in body["error"]["message"]
    # Untouched: still completed, result intact.
    answer = http.get(f"/hello/{request_id}").json()
    assert answer["status"] == "completed"
    assert answer["result"] == {"a": 1}


def test_delete_of_an_unknown_request_is_404(http: httpx.Client) -> None:
    assert_error(http.delete("/hello/0123456789abcdef0123"), 404, "not_found")
    assert_error(http.delete("/hello/..%2f"), 404, "not_found")


# -- deadlines and control headers ------------------------------------------------------------


def test_control_headers_are_parsed_and_not_forwarded(http: httpx.Client, backend: str) -> None:
    request_id = submit(
        http,
        json={},
        headers={
            "X-Chute-Queue-Timeout": "30",
            "X-Chute-Execution-Timeout": "2.5",
            "X-Chute-Webhook": "https://example.invalid/hook",
            "X-Chute-Future-Thing": "x",
            "X-Trace": "abc",
            "Authorization": "Bearer for-the-container",
        },
    )
    record = stored(backend, "hello", request_id)
    assert record is not None
    assert record.queue_deadline is not None
    assert record.queue_deadline - record.created_at == pytest.approx(30)
    assert record.timeout == 2.5
    assert record.extra["webhook_url"] == "https://example.invalid/hook"
    names = {name for name, _ in record.headers}
    assert not any(name.startswith("x-chute-") for name in names)
    # The API has no keys: Authorization is the container's, forwarded as Cortex did.
    assert ("authorization", "Bearer for-the-container") in record.headers
    assert ("x-trace", "abc") in record.headers


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Chute-Queue-Timeout", "0"),
        ("X-Chute-Queue-Timeout", "-1"),
        ("X-Chute-Queue-Timeout", "soon"),
        ("X-Chute-Execution-Timeout", "inf"),
        ("X-Chute-Execution-Timeout", "nan"),
        ("X-Chute-Queue-Timeout", "1_0"),  # float() takes these; the schema's number does not
        ("X-Chute-Queue-Timeout", "+1"),
        ("X-Chute-Queue-Timeout", ".5"),
        ("X-Chute-Queue-Timeout", "0x10"),
        ("X-Chute-Execution-Timeout", "1e999"),  # above the schema's maximum
        ("X-Chute-Webhook", "ftp://x"),
        ("Idempotency-Key", "é"),
        ("Idempotency-Key", "k" * 256),
    ],
)
def test_bad_control_headers_are_400(
    http: httpx.Client, backend: str, header: str, value: str
) -> None:
    before = queued(backend, "hello")
    response = http.post("/hello", content=b"{}", headers=[(header.encode(), value.encode())])
    body = assert_error(response, 400, "bad_request")
    assert header in body["error"]["message"]
    assert queued(backend, "hello") == before


@pytest.mark.parametrize(("value", "seconds"), [("1e3", 1000.0), ("5e-324", 5e-324), ("2.5", 2.5)])
def test_control_header_numbers_follow_the_schemas_number_grammar(
    http: httpx.Client, backend: str, value: str, seconds: float
) -> None:
    request_id = submit(http, json={}, headers={"X-Chute-Execution-Timeout": value})
    record = stored(backend, "hello", request_id)
    assert record is not None
    assert record.timeout == seconds


@pytest.mark.parametrize("wait", ["1e-3", "0.01", "5e-324"])
def test_wait_follows_the_schemas_number_grammar(http: httpx.Client, wait: str) -> None:
    request_id = submit(http, json={})
    assert http.get(f"/hello/{request_id}?wait={wait}").json()["status"] == "in_queue"


def test_a_queue_deadline_expires_a_queued_request_lazily(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, json={}, headers={"X-Chute-Queue-Timeout": "0.3"})
    time.sleep(0.5)
    body = http.get(f"/hello/{request_id}").json()
    assert body["status"] == "expired"
    record = stored(backend, "hello", request_id)
    assert record is not None
    assert record.status is Status.EXPIRED
    # An expired request cannot be cancelled any more.
    assert_error(http.delete(f"/hello/{request_id}"), 409, "conflict")


def test_a_started_request_does_not_expire(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, json={}, headers={"X-Chute-Queue-Timeout": "0.3"})
    move(backend, "hello", request_id, Status.IN_PROGRESS)
    time.sleep(0.5)
    assert http.get(f"/hello/{request_id}").json()["status"] == "in_progress"


def test_the_apis_queue_deadline_applies_without_a_header(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, "timed", json={})
    record = stored(backend, "timed", request_id)
    assert record is not None
    assert record.queue_deadline is not None
    assert record.queue_deadline - record.created_at == pytest.approx(1.0)
    # A header overrides it.
    request_id = submit(http, "timed", json={}, headers={"X-Chute-Queue-Timeout": "60"})
    record = stored(backend, "timed", request_id)
    assert record is not None
    assert record.queue_deadline is not None
    assert record.queue_deadline - record.created_at == pytest.approx(60)
    # No header, no API setting: no deadline (Cortex's behaviour).
    record = stored(backend, "hello", submit(http, json={}))
    assert record is not None
    assert record.queue_deadline is None
    assert record.timeout is None


# -- idempotency ------------------------------------------------------------------------------


def test_a_repeat_returns_the_same_id_and_enqueues_once(http: httpx.Client, backend: str) -> None:
    key = f"order-{secrets.token_hex(6)}"
    before = queued(backend, "hello")
    first = submit(http, content=b'{"n": 1}', headers={"Idempotency-Key": key})
    assert first == idempotent_id("hello", key)
    again = submit(http, content=b'{"n": 1}', headers={"Idempotency-Key": key})
    assert again == first
    assert queued(backend, "hello") == before + 1
    record = stored(backend, "hello", first)
    assert record is not None
    assert record.extra["idempotency_key"] == key
    assert len(record.extra["body_sha256"]) == 64
    assert all(name != "idempotency-key" for name, _ in record.headers)
    # The same key with another body is a conflict; nothing is queued.
    response = http.post("/hello", content=b'{"n": 2}', headers={"Idempotency-Key": key})
    assert_error(response, 409, "conflict")
    assert queued(backend, "hello") == before + 1
    # Keys are per API.
    other = submit(http, "timed", content=b'{"n": 1}', headers={"Idempotency-Key": key})
    assert other != first


def test_a_repeat_of_a_finished_request_still_returns_its_id(
    http: httpx.Client, backend: str
) -> None:
    key = secrets.token_hex(8)
    first = submit(http, json={"a": 1}, headers={"Idempotency-Key": key})
    move(backend, "hello", first, Status.IN_PROGRESS, Status.COMPLETED, result=b"[1]")
    assert submit(http, json={"a": 1}, headers={"Idempotency-Key": key}) == first
    assert http.get(f"/hello/{first}").json()["result"] == [1]


def test_a_repeat_while_the_first_is_not_yet_queued_is_told_to_retry(
    http: httpx.Client, backend: str
) -> None:
    """The first submit has stored its record but not queued it (its enqueue may still fail
    and remove the record): a repeat must not be handed an id that could later 404."""
    key = secrets.token_hex(8)
    body = b'{"n": 1}'
    request_id = idempotent_id("hello", key)

    async def store_unqueued() -> None:
        async with open_store(backend) as store:
            created = now()

            async def chunks() -> AsyncIterator[bytes]:
                yield body

            await store.create(
                RequestRecord(
                    id=request_id,
                    api="hello",
                    status=Status.IN_QUEUE,
                    created_at=created,
                    expires_at=created + 3600,
                    content_type="application/json",
                    extra={
                        "idempotency_key": key,
                        "body_sha256": hashlib.sha256(body).hexdigest(),
                    },
                ),
                chunks(),
            )

    run(store_unqueued)
    response = http.post("/hello", content=body, headers={"Idempotency-Key": key})
    assert_error(response, 503, "backend_unavailable")
    # Once the request has started it was certainly queued: the repeat gets the id.
    move(backend, "hello", request_id, Status.IN_PROGRESS)
    assert submit(http, content=body, headers={"Idempotency-Key": key}) == request_id


def test_concurrent_repeats_enqueue_exactly_once(gateway: GatewayProcess, backend: str) -> None:
    key = secrets.token_hex(8)
    before = queued(backend, "hello")
    body = secrets.token_bytes(200_000)  # big enough for the submits to overlap

    def one() -> httpx.Response:
        return http().post(
            f"{gateway.url}/hello",
            content=body,
            headers={"Idempotency-Key": key, "Content-Type": "application/octet-stream"},
            timeout=60,
        )

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: one(), range(12)))
    # A repeat that lands while the first is stored but not yet queued is told to retry
    # (503); once the first is queued, every repeat gets its id.
    assert {r.status_code for r in responses} <= {200, 503}, [r.text for r in responses]
    assert any(r.status_code == 200 for r in responses)
    retried = [one() for r in responses if r.status_code == 503]
    answers = [r for r in responses if r.status_code == 200] + retried
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    assert {r.json()["id"] for r in answers} == {idempotent_id("hello", key)}
    assert queued(backend, "hello") == before + 1


# -- long-poll --------------------------------------------------------------------------------


def test_wait_answers_as_soon_as_the_request_ends(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, json={})
    timer = threading.Timer(
        1.0,
        move,
        (backend, "hello", request_id, Status.IN_PROGRESS, Status.COMPLETED),
        {"result": b'{"done":true}'},
    )
    started = time.monotonic()
    timer.start()
    try:
        response = http.get(f"/hello/{request_id}", params={"wait": 30})
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"] == {"done": True}
    assert elapsed < 20  # well before the 30 s wait ran out


def test_wait_answers_the_current_status_when_it_ends(http: httpx.Client) -> None:
    request_id = submit(http, json={})
    started = time.monotonic()
    response = http.get(f"/hello/{request_id}", params={"wait": "0.5"})
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200
    assert response.json()["status"] == "in_queue"


def test_wait_on_a_finished_or_unknown_request(http: httpx.Client, backend: str) -> None:
    request_id = submit(http, json={})
    http.delete(f"/hello/{request_id}")
    response = http.get(f"/hello/{request_id}", params={"wait": 60})
    assert response.json()["status"] == "cancelled"
    assert_error(http.get("/hello/0123456789abcdef", params={"wait": 5}), 404, "not_found")


@pytest.mark.parametrize(
    "wait", ["0", "-1", "61", "soon", "nan", "inf", "", "1_0", "+1", ".5", "1e999", "%201"]
)
def test_a_bad_wait_is_400(http: httpx.Client, wait: str) -> None:
    request_id = submit(http, json={})
    assert_error(http.get(f"/hello/{request_id}?wait={wait}"), 400, "bad_request")


def test_wait_sees_a_queue_deadline_pass(http: httpx.Client) -> None:
    request_id = submit(http, json={}, headers={"X-Chute-Queue-Timeout": "0.5"})
    response = http.get(f"/hello/{request_id}", params={"wait": 30})
    assert response.json()["status"] == "expired"


# -- the queue-depth route --------------------------------------------------------------------


def test_queue_depth_route(http: httpx.Client, backend: str) -> None:
    submit(http, "timed", json={})
    response = http.get("/queues/timed")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"api", "queued", "in_flight", "dead"}
    assert body["api"] == "timed"
    assert body["queued"] == queued(backend, "timed") >= 1
    assert_error(http.get("/queues/nosuch"), 404, "not_found")
    assert_error(http.post("/queues/timed"), 405, "method_not_allowed")


def test_openapi_describes_the_new_routes(http: httpx.Client) -> None:
    from openapi_spec_validator import validate

    document = http.get("/openapi.json").json()
    validate(document)
    one = document["paths"]["/hello/{request_id}"]
    assert "delete" in one
    assert any(p["name"] == "wait" for p in one["get"]["parameters"])
    names = {p["name"] for p in document["paths"]["/hello"]["post"]["parameters"]}
    assert {"Idempotency-Key", "X-Chute-Queue-Timeout", "X-Chute-Webhook"} <= names
    assert "/queues/hello" in document["paths"]
    assert document["paths"]["/keyed"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/hello"]["post"]


# -- API keys ---------------------------------------------------------------------------------


def test_an_api_with_keys_needs_one(http: httpx.Client, backend: str) -> None:
    response = http.post("/keyed", json={})
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = http.post("/keyed", json={}, headers={"Authorization": "Bearer nope"})
    body = assert_error(wrong, 401, "unauthorized")
    assert "nope" not in body["error"]["message"]
    assert_error(
        http.post("/keyed", json={}, headers={"Authorization": f"Basic {KEYED_KEY}"}),
        401,
        "unauthorized",
    )
    good = {"Authorization": f"Bearer {KEYED_KEY}"}
    request_id = submit(http, "keyed", json={}, headers={**good, "X-Trace": "t"})
    # The gateway consumed the key: it never reaches the container.
    record = stored(backend, "keyed", request_id)
    assert record is not None
    assert all(name != "authorization" for name, _ in record.headers)
    assert ("x-trace", "t") in record.headers
    # GET and DELETE need it too.
    assert_error(http.get(f"/keyed/{request_id}"), 401, "unauthorized")
    assert http.get(f"/keyed/{request_id}", headers=good).status_code == 200
    assert_error(http.delete(f"/keyed/{request_id}"), 401, "unauthorized")
    assert http.delete(f"/keyed/{request_id}", headers=good).status_code == 200
    # The gateway's own routes stay open by default; other APIs stay open.
    for path in ("/healthz", "/metrics", "/openapi.json", "/queues/keyed"):
        assert http.get(path).status_code == 200, path
    assert http.post("/hello", json={}).status_code == 200


def test_global_keys_and_protect_admin(api_file: Path, backend: str, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the team's keys\n{GLOBAL_KEY}\n\n")
    env_key = "env-" + secrets.token_hex(6)
    with (
        gateway_process(
            api_file,
            queue_url=backend,
            store_url=backend,
            args=["--api-keys-file", str(keys_file), "--protect-admin"],
            env={"KEYED_API_KEYS": KEYED_KEY, "CHUTE_API_KEYS": f"{env_key}, other"},
        ) as running,
        httpx.Client(base_url=running.url, timeout=30) as http,
    ):
        for key in (GLOBAL_KEY, env_key):
            assert submit(http, json={}, headers={"Authorization": f"Bearer {key}"})
        assert_error(http.post("/hello", json={}), 401, "unauthorized")
        # An API with keys of its own takes only those.
        response = http.post("/keyed", json={}, headers={"Authorization": f"Bearer {GLOBAL_KEY}"})
        assert_error(response, 401, "unauthorized")
        assert submit(http, "keyed", json={}, headers={"Authorization": f"Bearer {KEYED_KEY}"})
        # Admin routes need a global key; health and the document stay open.
        for path in ("/metrics", "/queues/hello"):
            assert_error(http.get(path), 401, "unauthorized")
            ok = http.get(path, headers={"Authorization": f"bearer {GLOBAL_KEY}"})
            assert ok.status_code == 200, path
        assert http.get("/healthz").status_code == 200
        assert http.get("/openapi.json").status_code == 200
        metrics = http.get("/metrics", headers={"Authorization": f"Bearer {GLOBAL_KEY}"}).text
        assert (
            'chute_gateway_requests_total{api="hello",method="POST",status_code="401"}' in metrics
        )
    assert running.returncode == 0
    log = "".join(running.log)
    for key in (GLOBAL_KEY, env_key, KEYED_KEY):
        assert key not in log


def test_an_api_whose_keys_are_missing_does_not_start(api_file: Path, backend: str) -> None:
    with (
        pytest.raises(RuntimeError, match="KEYED_API_KEYS is not set"),
        gateway_process(api_file, queue_url=backend, store_url=backend, env={}),
    ):
        pass


# -- webhooks the gateway sends ---------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    deliveries: list[tuple[dict[str, str], dict[str, Any]]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    deliveries: list[tuple[dict[str, str], dict[str, Any]]] = []
    handler = type("Receiver", (_Receiver,), {"deliveries": deliveries})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", deliveries
    finally:
        server.shutdown()
        server.server_close()


def test_cancel_and_expiry_send_webhooks(
    http: httpx.Client,
    backend: str,
    receiver: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]],
) -> None:
    url, deliveries = receiver
    cancelled = submit(http, json={}, headers={"X-Chute-Webhook": url})
    http.delete(f"/hello/{cancelled}")
    expired = submit(
        http, json={}, headers={"X-Chute-Webhook": url, "X-Chute-Queue-Timeout": "0.2"}
    )
    time.sleep(0.4)
    assert http.get(f"/hello/{expired}").json()["status"] == "expired"
    eventually(lambda: len(deliveries) >= 2)
    by_id = {body["id"]: (headers, body) for headers, body in deliveries}
    assert by_id[cancelled][1]["status"] == "cancelled"
    assert by_id[expired][1]["status"] == "expired"
    headers = by_id[cancelled][0]
    assert {"webhook-id", "webhook-timestamp"} <= set(headers)
    # The outcome is recorded on the request, and GET shows it.
    shown = eventually(lambda: http.get(f"/hello/{cancelled}").json().get("webhook"))
    assert shown["event"] == "cancelled"
