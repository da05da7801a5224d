"""The dashboard's HTTP side (``chute.gateway._dashboard``) and ``chute status``, against real
gateway processes on SQLite: its JSON, its session and CSRF rules, its headers, and that what a
container returned travels as data, never as markup. (The page itself, in a browser:
tests/test_e2e_dashboard.py.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from gateway_support import HELLO_API

from chute import open_queue, open_store
from chute.config import load_apis
from chute.errors import ConfigError
from chute.gateway._routing import Router
from chute.protocol import EXTRA_DEAD_LETTERED, ErrorInfo, Status
from chute.testing import body_of, http, new_record
from chute.testing.gateway import GatewayProcess, gateway_process

API = "hello"
KEY = "k_status_" + "x" * 16
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture(scope="module")
def api_text() -> str:
    return HELLO_API


@pytest.fixture(scope="module")
def gateway(api_file: Path, db_url: str) -> Iterator[GatewayProcess]:
    with gateway_process(api_file, queue_url=db_url, store_url=db_url) as running:
        yield running
    assert running.returncode == 0


@pytest.fixture(scope="module")
def protected(api_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("protected")
    keys = directory / "keys"
    keys.write_text(KEY + "\n")
    url = f"sqlite:///{directory / 'chute.db'}"
    with gateway_process(
        api_file,
        queue_url=url,
        store_url=url,
        args=["--api-keys-file", str(keys), "--protect-admin"],
    ) as running:
        yield running


def session(base_url: str) -> tuple[httpx.Client, str]:
    """A client holding the dashboard's session cookie, and the page's CSRF token."""
    client = httpx.Client(base_url=base_url, timeout=30)
    page = client.get("/ui/")
    assert page.status_code == 200
    found = re.search(r'name="csrf(?:-token)?" (?:content|value)="([^"]+)"', page.text)
    assert found is not None, page.text
    return client, found.group(1)


def run(fn: Any, *args: Any) -> Any:
    return anyio.run(fn, *args)


def seed(db_url: str) -> dict[str, str]:
    """Requests in several states, written through the backends: a completed one whose result
    holds markup, a failed one whose container answered markup, a queued one, a dead letter."""

    async def write() -> dict[str, str]:
        ids: dict[str, str] = {}
        async with open_store(db_url) as store, open_queue(db_url) as queue:
            with_secret = msgspec.structs.replace(
                new_record(API), headers=[("x-upstream-authorization", "secret-value")]
            )
            done = await store.create(with_secret, body_of(b'{"payload": 1}'))
            await store.transition(API, done.id, Status.IN_PROGRESS, attempt=1)
            result = ('{"html": "' + HOSTILE + '"}').encode()
            await store.transition(API, done.id, Status.COMPLETED, attempt=1, result=result)
            ids["completed"] = done.id
            failed = await store.create(new_record(API), body_of(b"{}"))
            await store.transition(API, failed.id, Status.IN_PROGRESS, attempt=1)
            error = ErrorInfo(
                type="container_status",
                message="got status code 500, expected 200",
                status_code=500,
                body=HOSTILE,
            )
            await store.transition(API, failed.id, Status.FAILED, attempt=1, error=error)
            ids["failed"] = failed.id
            dead = await store.create(new_record(API), body_of(b"{}"))
            await queue.send(API, dead.id)
            found = [
                d
                for d in await queue.receive(API, max_messages=10, wait=1)
                if d.request_id == dead.id
            ]
            assert len(found) == 1
            [delivery] = found
            await store.transition(API, dead.id, Status.IN_PROGRESS, attempt=delivery.attempt)
            await store.transition(
                API,
                dead.id,
                Status.FAILED,
                attempt=delivery.attempt,
                error=ErrorInfo(type="timeout", message="gave up"),
                extra={EXTRA_DEAD_LETTERED: True},  # as the dequeuer marks it
            )
            await queue.dead_letter(delivery, "timeout: gave up")
            ids["dead"] = dead.id
            queued = await store.create(new_record(API), body_of(b"{}"))
            await queue.send(API, queued.id)
            ids["queued"] = queued.id
            await queue.send(API, queued.id, delay=300)  # a delayed message too
        return ids

    result: dict[str, str] = run(write)
    return result


@pytest.fixture(scope="module")
def seeded(gateway: GatewayProcess, db_url: str) -> dict[str, str]:
    return seed(db_url)


def test_the_page_and_its_assets_are_served_with_a_strict_policy(
    gateway: GatewayProcess,
) -> None:
    """``/ui`` redirects to ``/ui/``, the page and its assets come from the gateway with a CSP
    that allows only them, and the session cookie is HttpOnly and SameSite=Strict."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert client.get("/ui").headers["location"] == "/ui/"
        page = client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/ui" in cookie
        assert '<script src="/ui/assets/app.js"' in page.text
        assert "access-control-allow-origin" not in page.headers
        for name, kind in (("app.js", "javascript"), ("app.css", "css"), ("favicon.svg", "svg")):
            asset = client.get(f"/ui/assets/{name}")
            assert asset.status_code == 200, name
            assert kind in asset.headers["content-type"]
        script = client.get("/ui/assets/app.js").text
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)
        assert client.get("/ui/assets/../app.py").status_code == 404
        assert client.get("/ui/assets/index.html").status_code == 404
        assert client.get("/ui/nope").status_code == 404


def test_the_json_tells_depth_rates_requests_and_dead_letters(
    gateway: GatewayProcess, seeded: dict[str, str]
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        overview = client.get("/ui/api/overview").json()
        [api] = overview["apis"]
        assert api["name"] == API
        assert api["listing"] is True
        assert api["depth"] == {"queued": 2, "in_flight": 0, "delayed": 1, "dead": 1}
        rates = api["rates"]
        assert (rates["completed"], rates["failed"], rates["window"]) == (1, 2, 300.0)
        assert rates["per_minute"] == 0.6
        assert rates["latency_p50"] is not None

        listed = client.get(f"/ui/api/apis/{API}/requests").json()
        assert listed["listing"] is True
        ids = [r["id"] for r in listed["records"]]
        assert ids == [seeded["queued"], seeded["dead"], seeded["failed"], seeded["completed"]]

        failed = client.get(f"/ui/api/apis/{API}/requests", params={"status": "failed"}).json()
        assert [r["id"] for r in failed["records"]] == [seeded["dead"], seeded["failed"]]
        assert failed["records"][1]["error"]["status_code"] == 500

        first = client.get(f"/ui/api/apis/{API}/requests", params={"limit": 3}).json()
        assert len(first["records"]) == 3
        rest = client.get(
            f"/ui/api/apis/{API}/requests", params={"limit": 3, "cursor": first["cursor"]}
        ).json()
        assert [r["id"] for r in rest["records"]] == [seeded["completed"]]
        assert rest["cursor"] is None

        dead = client.get(f"/ui/api/apis/{API}/dead").json()
        assert dead["total"] == 1
        assert [(d["id"], d["reason"]) for d in dead["items"]] == [
            (seeded["dead"], "timeout: gave up")
        ]

        for bad in ({"status": "nope"}, {"cursor": "x~y"}, {"limit": "0"}, {"limit": "x"}):
            answer = client.get(f"/ui/api/apis/{API}/requests", params=bad)
            assert answer.status_code == 400, bad
        assert client.get("/ui/api/apis/nope/requests").status_code == 404
        assert client.get(f"/ui/api/apis/{API}/requests/not-an-id!").status_code == 404


def test_a_requests_detail_shows_what_happened_but_no_header_values(
    gateway: GatewayProcess, seeded: dict[str, str]
) -> None:
    """The detail: timestamps, attempts, the container's status and body start, the result's
    preview, the payload's size and download; a request header's value (possibly a credential
    meant for the container) never reaches the browser."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        done = client.get(f"/ui/api/apis/{API}/requests/{seeded['completed']}")
        assert done.status_code == 200
        assert "secret-value" not in done.text
        detail = done.json()
        assert detail["header_names"] == ["x-upstream-authorization"]
        assert detail["status"] == "completed"
        assert detail["attempts"] == 1
        assert detail["payload_size"] == len(b'{"payload": 1}')
        assert detail["result"]["preview"] == '{"html": "' + HOSTILE + '"}'
        payload = client.get(detail["payload_url"])
        assert payload.content == b'{"payload": 1}'
        assert payload.headers["content-type"] == "application/octet-stream"
        assert payload.headers["content-disposition"].startswith("attachment")

        failed = client.get(f"/ui/api/apis/{API}/requests/{seeded['failed']}").json()
        assert failed["error"] == {
            "type": "container_status",
            "message": "got status code 500, expected 200",
            "status_code": 500,
            "body": HOSTILE,
        }


def test_what_the_container_returned_is_data_not_markup(
    gateway: GatewayProcess, seeded: dict[str, str]
) -> None:
    """The container's markup travels only inside JSON (``application/json``, nosniff, CSP),
    and the page's HTML never holds it: the script shows it with textContent."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for path in (
            f"/ui/api/apis/{API}/requests",
            f"/ui/api/apis/{API}/requests/{seeded['failed']}",
            f"/ui/api/apis/{API}/requests/{seeded['completed']}",
        ):
            answer = client.get(path)
            assert answer.headers["content-type"] == "application/json"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "<script>alert" not in client.get("/ui/").text


def test_state_changes_need_post_and_the_sessions_csrf_token(
    gateway: GatewayProcess, db_url: str
) -> None:
    """Cancel, requeue and purge refuse a POST without the session's CSRF token, with a token
    of another session, or from another origin (403), and a GET (405); with it, they act."""
    [record] = run(_queued, db_url, 1)
    cancel = f"/ui/api/apis/{API}/requests/{record}/cancel"
    client, token = session(gateway.url)
    other, other_token = session(gateway.url)
    with closing(client), closing(other):
        assert client.post(cancel).status_code == 403
        assert client.post(cancel, headers={"x-csrf-token": "forged"}).status_code == 403
        assert client.post(cancel, headers={"x-csrf-token": other_token}).status_code == 403
        assert (
            http()
            .post(f"{gateway.url}{cancel}", headers={"x-csrf-token": token}, timeout=30)
            .status_code
            == 403
        )  # no session cookie
        cross = client.post(
            cancel, headers={"x-csrf-token": token, "origin": "https://evil.example"}
        )
        assert cross.status_code == 403
        assert client.get(cancel).status_code == 405
        assert run(_status, db_url, record) == "in_queue"

        done = client.post(cancel, headers={"x-csrf-token": token, "origin": gateway.url})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "cancelled"
        assert run(_status, db_url, record) == "cancelled"
        again = client.post(cancel, headers={"x-csrf-token": token})
        assert again.status_code == 200  # cancelling a cancelled request: still cancelled

        purge = f"/ui/api/apis/{API}/dead/purge"
        assert client.post(purge).status_code == 403
        requeue = f"/ui/api/apis/{API}/dead/requeue"
        assert client.post(requeue, content=b'{"ids": []}').status_code == 403


def test_requeue_and_purge_act_on_the_dead_letter(tmp_path: Path, api_file: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chute.db'}"
    with gateway_process(api_file, queue_url=url, store_url=url) as running:
        ids = seed(url)
        client, token = session(running.url)
        with closing(client):
            headers = {"x-csrf-token": token}
            moved = client.post(
                f"/ui/api/apis/{API}/dead/requeue",
                json={"ids": [ids["dead"], ids["completed"]]},
                headers=headers,
            ).json()
            assert moved["requeued"] == 1
            assert moved["notes"] == [
                f"{ids['completed']}: not in the dead letter of {API}; left as is"
            ]
            assert run(_status, url, ids["dead"]) == "in_queue"
            assert client.get(f"/ui/api/apis/{API}/dead").json()["total"] == 0
            run(_dead_letter_again, url, ids["dead"])
            purged = client.post(f"/ui/api/apis/{API}/dead/purge", headers=headers).json()
            assert purged == {"purged": 1}
            assert client.get(f"/ui/api/apis/{API}/dead").json()["items"] == []


def test_a_protected_dashboard_needs_a_signed_in_session(protected: GatewayProcess) -> None:
    """With --protect-admin: the page is the sign-in form, the JSON is 401 until a global key
    signs the session in (or a GET presents it as a bearer token, as ``chute status`` does);
    the key never comes back in a cookie or a page; signing out ends the session."""
    client, token = session(protected.url)
    with closing(client):
        assert 'name="key"' in client.get("/ui/").text
        assert client.get("/ui/api/overview").status_code == 401
        bearer = {"authorization": f"Bearer {KEY}"}
        assert client.get("/ui/api/overview", headers=bearer).status_code == 200
        wrong = client.post("/ui/login", data={"csrf": token, "key": "nope"})
        assert wrong.status_code == 401
        assert client.get("/ui/api/overview").status_code == 401
        assert client.post("/ui/login", data={"key": KEY}).status_code == 403  # no CSRF token
        signed = client.post("/ui/login", data={"csrf": token, "key": KEY})
        assert signed.status_code == 303
        assert KEY not in signed.headers["set-cookie"]
        assert client.get("/ui/api/overview").status_code == 200
        page = client.get("/ui/")
        assert 'id="apis"' in page.text
        assert KEY not in page.text
        new_token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert new_token is not None
        client.post("/ui/logout", data={"csrf": new_token.group(1)})
        assert client.get("/ui/api/overview").status_code == 401
    forged = http().get(
        f"{protected.url}/ui/api/overview",
        cookies={"chute_ui": "eyJ4IjoxfQ.AAAA"},
        timeout=30,
    )
    assert forged.status_code == 401


def test_no_api_may_live_under_ui(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text(HELLO_API + "  networking:\n    endpoint: /ui/hello\n")
    with pytest.raises(ConfigError, match="reserved"):
        Router(load_apis(path))


# -- chute status ----------------------------------------------------------------------------


def chute(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chute", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_chute_status_prints_the_dashboards_counts(
    gateway: GatewayProcess, seeded: dict[str, str]
) -> None:
    """The table holds the overview's counts and rates (the dashboard's, from one place)."""
    overview = http().get(f"{gateway.url}/ui/api/overview", timeout=30).json()
    [api] = overview["apis"]
    depth, rates = api["depth"], api["rates"]
    done = chute("status", "--gateway", gateway.url)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split()[:3] == ["API", "QUEUED", "IN"]
    expected = [API, *(str(depth[k]) for k in ("queued", "in_flight", "delayed", "dead"))]
    expected += [f"{rates['per_minute']:g}", str(rates["failed"])]
    assert row.split()[:7] == expected
    assert depth["delayed"] == 1
    assert chute("status", API, "--gateway", gateway.url).stdout == done.stdout
    unknown = chute("status", "nope", "--gateway", gateway.url)
    assert unknown.returncode == 5
    assert "no API named 'nope'" in unknown.stderr


def test_chute_status_exit_statuses(protected: GatewayProcess) -> None:
    refused = chute("status", "--gateway", protected.url, env={"CHUTE_API_KEY": ""})
    assert refused.returncode == 5
    assert "sign in" in refused.stderr
    allowed = chute("status", "--gateway", protected.url, env={"CHUTE_API_KEY": KEY})
    assert allowed.returncode == 0, allowed.stderr
    down = chute("status", "--gateway", "http://127.0.0.1:9")
    assert down.returncode == 4
    assert "cannot reach the gateway" in down.stderr


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("parent_ignores_sigint", [False, True])
def test_chute_status_watch_reprints_on_change_and_ends_with_ctrl_c(
    tmp_path: Path, api_file: Path, parent_ignores_sigint: bool
) -> None:
    """``--watch`` prints the table, prints it again when a count moves, and exits 0 on
    Ctrl-C (SIGINT) — also when started by a process that ignores SIGINT (an ignored signal
    is inherited, and Python then installs no KeyboardInterrupt handler of its own)."""
    url = f"sqlite:///{tmp_path / 'chute.db'}"
    with gateway_process(api_file, queue_url=url, store_url=url) as running:
        watch = subprocess.Popen(
            [sys.executable, "-m", "chute", "status", "--watch", "--interval", "0.2"]
            + ["--gateway", running.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_ignore_sigint if parent_ignores_sigint else None,
        )
        try:
            assert watch.stdout is not None
            first = [watch.stdout.readline() for _ in range(3)]
            assert first[0].startswith("-- ")
            assert first[2].split()[:2] == [API, "0"]
            http().post(f"{running.url}/{API}", json={}, timeout=30).raise_for_status()
            second = [watch.stdout.readline() for _ in range(3)]
            assert second[0].startswith("-- ")
            assert second[2].split()[:2] == [API, "1"]
            time.sleep(0.5)
            watch.send_signal(signal.SIGINT)
            assert watch.wait(30) == 0
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()


async def _queued(url: str, count: int) -> list[str]:
    ids = []
    async with open_store(url) as store, open_queue(url) as queue:
        for _ in range(count):
            record = await store.create(new_record(API), body_of(b"{}"))
            await queue.send(API, record.id)
            ids.append(record.id)
    return ids


async def _status(url: str, request_id: str) -> str:
    async with open_store(url) as store:
        record = await store.get(API, request_id)
        assert record is not None
        return record.status.value


async def _dead_letter_again(url: str, request_id: str) -> None:
    async with open_queue(url) as queue:
        for delivery in await queue.receive(API, max_messages=10, wait=5):
            if delivery.request_id == request_id:
                await queue.dead_letter(delivery, "again")
            else:
                await queue.release(delivery)
