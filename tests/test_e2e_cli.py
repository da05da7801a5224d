"""The ``chute`` command as a newcomer meets it (issue 15): one ``chute dev`` of the example in
a folder, and the other commands run as real processes from that folder, with no flags that
name the gateway or the backends."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    API,
    EXAMPLE,
    PATIENCE,
    PY,
    ChuteDev,
    Processes,
    eventually,
    start_chute_dev,
)

from chute import Client
from chute.testing import free_port, http
from chute.testing.receiver import WebhookReceiver

#: The environment of a command run "from another terminal": nothing points at the gateway.
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("CHUTE_GATEWAY_URL", "CHUTE_QUEUE_URL", "CHUTE_STORE_URL", "CORTEX_CLI_CONFIG_DIR")
}

#: On one xdist worker (--dist=loadgroup): one chute dev (the module's folder) for every test.
pytestmark = pytest.mark.xdist_group("test_e2e_cli")


def chute(*args: str, cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """``chute ARGS`` as a real process, from ``cwd``, with a clean environment."""
    kwargs.setdefault("env", CLEAN_ENV)
    kwargs.setdefault("timeout", PATIENCE)
    kwargs.setdefault("capture_output", True)
    return subprocess.run([PY, "-m", "chute", *args], cwd=cwd, check=False, **kwargs)


class Folder:
    """A user's folder with a ``chute dev`` running in it (state in ./.chute, the backends in
    ./backend/, not where the defaults would look)."""

    def __init__(self, path: Path, dev: ChuteDev) -> None:
        self.path = path
        self.dev = dev


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Folder]:
    path = tmp_path_factory.mktemp("newcomer")
    (path / "backend").mkdir()
    url = f"sqlite:///{path / 'backend' / 'chute.db'}"
    # The example, taking per-request webhooks to this machine (the webhook test's receiver).
    example = path / "hello-world"
    shutil.copytree(EXAMPLE.parent, example)
    api_file = example / EXAMPLE.name
    webhooks = "  webhook:\n    request_urls: [127.0.0.1]\n    private_targets: true\n"
    api_file.write_text(api_file.read_text() + webhooks)
    processes = Processes(path)
    try:
        dev = start_chute_dev(
            processes, api_file, path / ".chute", "--queue", url, "--store", url, port=free_port()
        )
        dev.wait_ready()
        yield Folder(path, dev)
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop_all()


# -- item 6: the CLI finds a running chute dev; chute dev prints CHUTE_GATEWAY_URL ------------


def test_chute_dev_prints_the_gateway_url_line(folder: Folder) -> None:
    assert f"CHUTE_GATEWAY_URL={folder.dev.url}\n" in folder.dev.proc.output()


def test_submit_finds_the_running_chute_dev_on_another_port(folder: Folder) -> None:
    assert not folder.dev.url.endswith(":8888")
    subdirectory = folder.path / "deeper"
    subdirectory.mkdir(exist_ok=True)
    done = chute("submit", API, "--json", '{"text": "found"}', "--wait", cwd=subdirectory)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "completed"
    assert answer["result"]["message"] == "hello, found!"


def test_dead_letter_uses_chute_devs_backends(folder: Folder) -> None:
    # The backends are in ./backend/, not the default ./.chute/chute.db: only dev.json says so.
    done = chute("dead-letter", "list", API, cwd=folder.path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == f"no dead letters for {API}"


# -- item 5: print what the gateway said; chute.Result has every field -------------------------


def test_get_prints_the_gateway_json_byte_for_byte(folder: Folder) -> None:
    submitted = chute("submit", API, "--json", '{"text": "bytes"}', "--wait", cwd=folder.path)
    assert submitted.returncode == 0, submitted.stderr
    request_id = json.loads(submitted.stdout)["id"]
    direct = http().get(f"{folder.dev.url}/{API}/{request_id}", timeout=30).content
    got = chute("get", API, request_id, cwd=folder.path)
    assert got.returncode == 0, got.stderr
    assert got.stdout == direct + b"\n"
    assert submitted.stdout == direct + b"\n"
    # Millisecond timestamps as the gateway writes them, not re-encoded to microseconds.
    assert re.search(rb'"timestamp":"[^"]*\.\d{3}Z"', got.stdout), got.stdout


def test_webhook_delivery_reaches_the_cli_and_the_client(folder: Folder) -> None:
    receiver = WebhookReceiver().start()
    try:
        with Client(folder.dev.url) as client:
            request_id = client.submit(
                API, json={"text": "hook"}, headers={"X-Chute-Webhook": receiver.url}
            )
            client.wait(API, request_id, timeout=PATIENCE)

            def delivered() -> Any:
                result = client.get(API, request_id)
                return result if result.webhook and result.webhook.status == "delivered" else None

            result = eventually(delivered, "the webhook's delivery status")
        assert result.webhook is not None
        assert result.webhook.event == "completed"
        assert result.webhook.attempts >= 1
        got = chute("get", API, request_id, cwd=folder.path)
        assert json.loads(got.stdout)["webhook"]["status"] == "delivered"
    finally:
        receiver.stop()


# -- item 7: --data @FILE and - stream the body ------------------------------------------------


def peak_rss_of(argv: list[str], *, cwd: Path, stdin: Any = subprocess.DEVNULL) -> tuple[int, int]:
    """Run ``argv``; return its exit status and its peak RSS in bytes, read from
    /proc/<pid>/status (VmHWM) while it runs."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=CLEAN_ENV,
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + PATIENCE
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            text = status.read_text()
        except OSError:
            break
        match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
        if match:
            peak = max(peak, int(match[1]) * 1024)
        time.sleep(0.01)
    return proc.wait(PATIENCE), peak


def test_data_from_a_file_or_stdin_is_streamed(folder: Folder, tmp_path: Path) -> None:
    size = 150 * 2**20  # over the gateway's 100 MiB limit: the 413, without 459 MB RSS
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.truncate(size)
    argv = [PY, "-m", "chute", "submit", API]
    code, peak = peak_rss_of([*argv, "--data", f"@{big}"], cwd=folder.path)
    assert code == 5  # 413 from the gateway
    assert 0 < peak < size / 2, peak
    with big.open("rb") as stdin:
        code, peak = peak_rss_of([*argv, "--data", "-"], cwd=folder.path, stdin=stdin)
    assert code == 5
    assert 0 < peak < size / 2, peak

    small = tmp_path / "small.json"
    small.write_text('{"text": "from a file"}')
    for data, given in ((f"@{small}", None), ("-", small.read_bytes())):
        done = chute(
            "submit",
            API,
            "--data",
            data,
            "-H",
            "Content-Type: application/json",
            "--wait",
            cwd=folder.path,
            input=given,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"]["message"] == "hello, from a file!"


# -- item 9: get --wait shows status changes on a terminal, nothing otherwise ------------------


def test_get_wait_shows_status_changes_on_a_terminal_only(folder: Folder, tmp_path: Path) -> None:
    go = tmp_path / "go"
    with Client(folder.dev.url) as client:
        # Runs until the test has seen the CLI show it running, however slow the CLI starts.
        slow = client.submit(API, json={"text": "slow", "wait_for": str(go)})
        quiet_id = client.submit(API, json={"text": "quiet", "sleep": 0.5})
    controller, terminal = pty.openpty()
    output = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                return
            if not chunk:
                return
            output.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        cli = subprocess.Popen(
            [PY, "-m", "chute", "get", API, slow, "--wait"],
            cwd=folder.path,
            env=CLEAN_ENV,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )

        def shown_running() -> bool:
            assert cli.poll() is None, "chute get --wait ended before the request did"
            text = bytes(output).decode(errors="replace")
            return re.search(rf"{slow}: in_(queue|progress) \(", text) is not None

        try:
            eventually(shown_running, "the CLI to show the request running")
        finally:
            go.touch()  # the request completes; the CLI sees it and exits
            cli.communicate(timeout=PATIENCE)
    finally:
        os.close(terminal)
        reader.join(10)
        os.close(controller)
    assert cli.returncode == 0
    shown = output.decode(errors="replace")
    assert re.search(rf"{slow}: in_(queue|progress) \(", shown), shown
    assert re.search(rf"{slow}: completed \(", shown), shown
    quiet = chute("get", API, quiet_id, "--wait", cwd=folder.path)
    assert quiet.returncode == 0
    assert quiet.stderr == b""


# -- item 10: the gateway's access log ---------------------------------------------------------


def test_access_log_has_one_json_line_per_request(folder: Folder) -> None:
    with Client(folder.dev.url) as client:
        request_id = client.submit(API, json={"text": "logged"})
        client.get(API, request_id)

    def lines() -> list[dict[str, Any]]:
        found = []
        for line in folder.dev.proc.output().splitlines():
            _, _, text = line.partition("| ")
            if '"logger":"chute.access"' in text and request_id in text:
                found.append(json.loads(text))
        return found if len(found) >= 2 else []

    post, get = eventually(lines, "the access log lines of the request")[:2]
    assert post["method"] == "POST"
    assert post["path"] == f"/{API}"
    assert post["status"] == 200
    assert post["request_id"] == request_id
    assert post["bytes"] > 0
    assert post["duration"] >= 0
    assert get["method"] == "GET"
    assert get["path"] == f"/{API}/{request_id}"
    assert set(get) >= {"status", "bytes", "duration", "request_id", "ts"}


# -- item 2: a second chute dev in the same folder ---------------------------------------------


def test_a_second_chute_dev_in_the_same_folder_says_so_in_one_line(folder: Folder) -> None:
    second = chute("dev", str(EXAMPLE), "--port", str(free_port()), cwd=folder.path)
    assert second.returncode == 1
    stderr = second.stderr.decode()
    assert stderr.count("\n") == 1, stderr
    assert "another chute dev is running with the state directory" in stderr
    assert "Traceback" not in stderr
    assert "started" not in second.stdout.decode()


# -- item 4: fail fast on unusable backends and settings, before anything starts ---------------


def test_chute_dev_refuses_an_unreachable_backend_at_once(tmp_path: Path) -> None:
    done = chute("dev", str(EXAMPLE), "--queue", "redis://127.0.0.1:1/3", cwd=tmp_path)
    assert done.returncode == 4  # unreachable (docs/cli.md)
    stderr = done.stderr.decode()
    assert stderr.startswith("chute dev: the queue backend redis://127.0.0.1:1/3 is not usable")
    assert "Connect call failed" in stderr or "refused" in stderr.lower(), stderr
    assert "Traceback" not in stderr
    assert "started gateway" not in done.stdout.decode()


def test_chute_dev_refuses_bad_options_and_missing_key_variables(tmp_path: Path) -> None:
    bad = chute("dev", str(EXAMPLE), "--store", "redis://127.0.0.1:6379/9?bogus=1", cwd=tmp_path)
    assert bad.returncode == 3
    assert "the store URL redis://127.0.0.1:6379/9?bogus=1" in bad.stderr.decode()
    assert "unknown parameter 'bogus'" in bad.stderr.decode()
    api_file = tmp_path / "api.yaml"
    api_file.write_text(
        EXAMPLE.read_text().replace("  pod:\n", "  auth:\n    keys_env: NEWCOMER_KEYS\n  pod:\n", 1)
    )
    (tmp_path / "app.py").write_text((EXAMPLE.parent / "app.py").read_text())
    keyless = chute("dev", str(api_file), cwd=tmp_path)
    assert keyless.returncode == 3
    assert "$NEWCOMER_KEYS is not set" in keyless.stderr.decode()
    assert "started" not in keyless.stdout.decode()


def test_client_docs_sample_of_chute_get_is_what_hello_world_returns(folder: Folder) -> None:
    text = (Path(__file__).parent.parent / "docs" / "client.md").read_text()
    sample = re.search(r"^\$ chute get hello-world \S+\n(\{.*\})$", text, re.M)
    assert sample is not None, "docs/client.md lost its `chute get` sample"
    documented = json.loads(sample[1])
    done = chute("submit", API, "--json", '{"text": "hi"}', "--wait", cwd=folder.path)
    real = json.loads(done.stdout)
    assert list(real) == list(documented)
    assert list(real["result"]) == list(documented["result"])
    assert real["result"]["message"] == documented["result"]["message"] == "hello, hi!"
