"""The dashboard at /ui/ in a real browser: Debian's headless chromium, driven by playwright
(``executable_path``: no browser download), against a real gateway, dequeuer and the example
container, on SQLite and on Redis.

A missing chromium skips these tests, and fails them with ``CHUTE_REQUIRE_SERVICES=1`` (CI).
``CHUTE_DASHBOARD_SCREENSHOT=path.png`` saves the page as the SQLite run leaves it (that is how
docs/dashboard.png was taken).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    API,
    EXAMPLE,
    PATIENCE,
    PY,
    Processes,
    Stack,
    eventually,
    http_ok,
    request_status,
    sqlite_url,
    start_chute_dev,
    submit_to,
    write_api_file,
)

from chute.testing.http import http
from chute.testing.services import unavailable

CHROMIUM = os.environ.get("CHUTE_CHROMIUM", "/usr/bin/chromium")

RETRIES = """  retries:
    max_attempts: 2
    initial_backoff: 100ms
    retry_on: ["500"]
"""

#: What the container echoes back: shown as text by the page, never run.
HOSTILE = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"

#: On one xdist worker (--dist=loadgroup): one browser for every test.
pytestmark = pytest.mark.xdist_group("test_e2e_dashboard")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        unavailable(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the test dependency group has it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=PATIENCE * 1000)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(PATIENCE * 1000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations
    yield page
    context.close()
    assert errors == [], f"the page's script raised: {errors}"


def stack_for(processes: Processes, tmp_path: Path, backend: str) -> Stack:
    """The example's container (one worker, one retry on a 500), a gateway and a dequeuer."""
    stack = Stack(processes, tmp_path, backend)
    write_api_file(stack.api_file, stack.port, workers=1)
    with stack.api_file.open("a") as api_file:
        api_file.write(RETRIES)
    stack.start_container()
    stack.start_gateway()
    _, admin = stack.start_dequeuer()
    eventually(lambda: http_ok(f"http://127.0.0.1:{admin}/healthz"), "the dequeuer's /healthz")
    return stack


def protected_gateway(processes: Processes, tmp_path: Path, key: str) -> str:
    """A gateway on SQLite with ``key`` as its only global key and --protect-admin."""
    keys = tmp_path / "keys"
    keys.write_text(key + "\n")
    stack = Stack(processes, tmp_path, sqlite_url(tmp_path))
    port = stack.gateway_url.rsplit(":", 1)[1]
    argv = [PY, "-m", "chute", "gateway", str(stack.api_file), "--port", port]
    argv += ["--queue", stack.backend, "--store", stack.store]
    argv += ["--api-keys-file", str(keys), "--protect-admin"]
    processes.start("gateway", argv)
    eventually(lambda: http_ok(f"{stack.gateway_url}/healthz"), "the gateway's /healthz")
    return stack.gateway_url


def submit(stack: Stack, payload: Any) -> str:
    answer = http().post(f"{stack.gateway_url}/{API}", json=payload, timeout=30)
    answer.raise_for_status()
    request_id: str = answer.json()["id"]
    return request_id


def finished(stack: Stack, request_id: str) -> dict[str, Any]:
    terminal = ("completed", "failed", "cancelled", "expired")
    status: dict[str, Any] = eventually(
        lambda: (b := request_status(stack.gateway_url, request_id))["status"] in terminal and b,
        f"request {request_id} to finish",
    )
    return status


def count(page: Any, which: str) -> str:
    text: str = page.locator(f'#apis tr[data-api="{API}"] td[data-count="{which}"]').inner_text()
    return text


def test_the_dashboard_follows_requests_and_acts_on_them(
    tmp_path: Path, processes: Processes, backend: str, page: Any
) -> None:
    from playwright.sync_api import expect

    stack = stack_for(processes, tmp_path, backend)
    page.goto(f"{stack.gateway_url}/ui/")
    expect(page.locator(f'#apis tr[data-api="{API}"]')).to_be_visible()
    expect(page.locator(".api-name").first).to_have_text(API)
    assert count(page, "queued") == "0"

    # The counts move as requests flow: one worker, a slow request (running until the page has
    # shown it, however slow the page is) and two behind it.
    go = tmp_path / "go"
    slow = submit(stack, {"wait_for": str(go)})
    behind = [submit(stack, {"text": f"n{i}"}) for i in range(2)]
    try:
        in_flight = page.locator(f'#apis tr[data-api="{API}"] td[data-count="in_flight"]')
        expect(in_flight).to_have_text("1")
        queued = page.locator(f'#apis tr[data-api="{API}"] td[data-count="queued"]')
        expect(queued).to_have_text("2")
    finally:
        go.touch()
    for request_id in [slow, *behind]:
        assert finished(stack, request_id)["status"] == "completed"
    expect(page.locator(f'#apis tr[data-api="{API}"] td[data-count="queued"]')).to_have_text("0")
    expect(page.locator(f'#apis tr[data-api="{API}"] td[data-count="in_flight"]')).to_have_text("0")
    rates = page.locator(f'#apis tr[data-api="{API}"]')
    expect(rates.locator('td[data-rate="per_minute"]')).to_have_text("0.6")  # 3 in 5 minutes
    expect(rates.locator('td[data-rate="p50"]')).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    expect(page.locator(f'#requests tr[data-id="{slow}"] td.status')).to_have_text("completed")

    # A failed request shows its reason, in the list filtered by status and in its detail.
    failing = submit(stack, {"fail": True})
    assert finished(stack, failing)["status"] == "failed"
    page.select_option("#status-filter", "failed")
    row = page.locator(f'#requests tr[data-id="{failing}"]')
    expect(row.locator("td.reason")).to_contain_text("container_status")
    expect(row.locator("td.reason")).to_contain_text("HTTP 500")
    expect(page.locator(f'#requests tr[data-id="{slow}"]')).to_have_count(0)
    row.get_by_role("button").click()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-fields")).to_contain_text("failing on purpose")
    expect(page.locator("#cancel")).to_be_hidden()

    # The dead letter: the failed request is there; requeued from the page, it runs again.
    expect(page.locator(f'#dead tr[data-id="{failing}"] td.reason')).not_to_be_empty()
    expect(page.locator(f'#apis tr[data-api="{API}"] td[data-count="dead"]')).to_have_text("1")
    page.get_by_role("button", name=f"Requeue {failing}").click()
    expect(page.locator("#message")).to_contain_text("Requeued 1")
    eventually(
        lambda: request_status(stack.gateway_url, failing)["attempts"] > 2,
        "the requeued request to run again",
    )
    assert finished(stack, failing)["status"] == "failed"  # it fails again: dead again
    expect(page.locator(f'#dead tr[data-id="{failing}"]')).to_be_visible()
    page.get_by_role("button", name="Purge the dead letter").click()
    expect(page.locator("#message")).to_contain_text("Purged 1")
    expect(page.locator(f'#apis tr[data-api="{API}"] td[data-count="dead"]')).to_have_text("0")

    # Cancel from the page: a slow request, and one waiting behind it.
    page.select_option("#status-filter", "")
    busy = submit(stack, {"sleep": 30})
    waiting = submit(stack, {"text": "never"})
    page.locator(f'#requests tr[data-id="{waiting}"]').get_by_role("button").click()
    expect(page.locator("#detail-id")).to_have_text(waiting)
    page.locator("#cancel").click()
    expect(page.locator("#message")).to_contain_text(f"Request {waiting} cancelled")
    assert request_status(stack.gateway_url, waiting)["status"] == "cancelled"
    expect(page.locator(f'#requests tr[data-id="{waiting}"] td.status')).to_have_text("cancelled")
    page.locator(f'#requests tr[data-id="{busy}"]').get_by_role("button").click()
    expect(page.locator("#detail-id")).to_have_text(busy)
    page.locator("#cancel").click()
    expect(page.locator("#message")).to_contain_text(f"Request {busy} cancelled")
    assert finished(stack, busy)["status"] == "cancelled"

    # What the container returned is shown as text: its markup is not run.
    hostile = submit(stack, {"text": HOSTILE})
    assert finished(stack, hostile)["status"] == "completed"
    page.locator(f'#requests tr[data-id="{hostile}"]').get_by_role("button").click()
    expect(page.locator("#detail-result")).to_contain_text("<script>window.pwned = 1</script>")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#detail-result script, #detail-result img").count() == 0

    shot = os.environ.get("CHUTE_DASHBOARD_SCREENSHOT")
    if shot and backend.startswith("sqlite"):
        page.locator(f'#requests tr[data-id="{failing}"]').get_by_role("button").click()
        expect(page.locator("#detail-id")).to_have_text(failing)
        page.wait_for_timeout(2500)  # one more poll, so the counts are settled
        page.screenshot(path=shot, full_page=True)


def test_a_protected_dashboard_asks_for_the_key(
    tmp_path: Path, processes: Processes, page: Any
) -> None:
    """With --protect-admin the page is a sign-in form; a wrong key is refused; the right one
    opens the dashboard, and the browser holds only an HttpOnly session, never the key."""
    from playwright.sync_api import expect

    key = "k_dashboard_" + os.urandom(8).hex()
    gateway_url = protected_gateway(processes, tmp_path, key)
    assert http().get(f"{gateway_url}/ui/api/overview").status_code == 401
    page.goto(f"{gateway_url}/ui/")
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.locator("#apis")).to_have_count(0)

    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("not one of the gateway's keys")

    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(f'#apis tr[data-api="{API}"]')).to_be_visible()
    assert key not in page.url
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["chute_ui"]
    assert cookies[0]["httpOnly"]
    assert cookies[0]["sameSite"] == "Strict"
    assert key not in cookies[0]["value"]
    assert key not in page.content()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()


def test_chute_dev_prints_the_dashboard_and_it_works_on_sqlite(
    tmp_path: Path, processes: Processes, page: Any
) -> None:
    """``chute dev`` of the example, out of the box (its SQLite file): the start-up output
    names the dashboard's URL, and the page there lists a request sent to the API."""
    from playwright.sync_api import expect

    dev = start_chute_dev(processes, EXAMPLE, tmp_path / "state")
    dev.wait_ready()
    found = re.search(r"dashboard: (http://\S+/ui/)", dev.proc.output())
    assert found is not None, dev.proc.output()
    assert found.group(1) == f"{dev.url}/ui/"
    request_id = submit_to(dev.url, API, {"text": "dev"})
    page.goto(found.group(1))
    expect(page.locator(f'#requests tr[data-id="{request_id}"] td.status')).to_have_text(
        "completed"
    )
    expect(page.locator("#store")).to_have_text("SqliteStore")
