"""Admin commands (`chute storage init`, `chute dead-letter`) and CLI argument checks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from chute.cli import main
from chute.cli.storage import parse_retention
from chute.errors import ConfigError


def test_storage_init_on_sqlite_has_nothing_to_prepare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/chute.db"
    assert main(["storage", "init", "--store", url]) == 0
    assert capsys.readouterr().out.strip() == f"{url}: nothing to prepare"


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800.0), ("36h", 129600.0), ("90m", 5400.0)]
)
def test_retention_syntax(text: str, seconds: float) -> None:
    assert parse_retention(text) == seconds


def test_bad_retention_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_retention("a week")


def test_dead_letter_commands_refuse_a_database_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from the wrong directory, an admin command must say so, not report an empty dead
    letter from a database it just created."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHUTE_QUEUE_URL", raising=False)
    assert main(["dead-letter", "list", "hello-world"]) == 3  # a configuration problem
    assert "no chute database at" in capsys.readouterr().err
    assert not (tmp_path / ".chute").exists()


@pytest.mark.parametrize("value", ["-1", "0", "nan", "soon"])
def test_wait_timeouts_must_be_positive_seconds(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["get", "hello-world", "abc", "--wait", "--timeout", value])
    assert exited.value.code == 2
    assert "--timeout" in capsys.readouterr().err


# -- dead letters: requeue every one, purge only when confirmed (issue 15, item 8) -----------


async def _dead_letters(url: str, api: str, count: int) -> list[str]:
    """``count`` requests that failed their last attempt and went to the dead letter, as the
    dequeuer leaves them."""
    from chute.protocol import EXTRA_DEAD_LETTERED, Status
    from chute.registry import open_queue, open_store
    from chute.testing.store import new_record

    ids = []
    async with open_queue(url) as queue, open_store(url) as store:
        for _ in range(count):
            record = await store.create(new_record(api), _body())
            await queue.send(api, record.id)
            ids.append(record.id)
        while deliveries := await queue.receive(api, max_messages=10, wait=0, lease=30):
            for delivery in deliveries:
                await store.transition(api, delivery.request_id, Status.IN_PROGRESS, attempt=1)
                await store.transition(
                    api,
                    delivery.request_id,
                    Status.FAILED,
                    attempt=1,
                    extra={EXTRA_DEAD_LETTERED: True},
                )
                await queue.dead_letter(delivery, "gave up")
    return ids


async def _body() -> AsyncIterator[bytes]:
    yield b"{}"


def _dead_count(url: str, api: str) -> int:
    from chute.registry import open_queue

    async def count() -> int:
        async with open_queue(url) as queue:
            return (await queue.depth(api)).dead

    return anyio.run(count)


def test_requeue_without_ids_moves_every_dead_letter_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chute import requeue

    url = f"sqlite:///{tmp_path}/chute.db"
    anyio.run(_dead_letters, url, "hello", 7)
    monkeypatch.setattr(requeue, "REQUEUE_BATCH", 2)  # 7 dead letters: four batches
    code = main(["dead-letter", "requeue", "hello", "--queue", url, "--store", url])
    assert code == 0, capsys.readouterr()
    assert capsys.readouterr().out.splitlines()[-1] == "requeued 7 requests of hello"
    assert _dead_count(url, "hello") == 0


def test_purge_refuses_without_a_terminal_or_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/chute.db"
    anyio.run(_dead_letters, url, "hello", 2)
    refused = subprocess.run(
        [sys.executable, "-m", "chute", "dead-letter", "purge", "hello", "--queue", url],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _dead_count(url, "hello") == 2
    assert main(["dead-letter", "purge", "hello", "--queue", url, "--yes"]) == 0
    assert "purged 2 dead letters of hello" in capsys.readouterr().out
    assert _dead_count(url, "hello") == 0


def test_purge_asks_on_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/chute.db"
    anyio.run(_dead_letters, url, "hello", 1)
    argv = [sys.executable, "-m", "chute", "dead-letter", "purge", "hello", "--queue", url]
    for answer, left in ((b"n\n", 1), (b"y\n", 0)):
        output = _run_on_a_terminal(argv, answer)
        assert "for good? [y/N]" in output
        assert _dead_count(url, "hello") == left


def _run_on_a_terminal(argv: list[str], typed: bytes) -> str:
    """Run ``argv`` with a pseudo-terminal as its standard input and error; type ``typed``."""
    import os
    import pty

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(argv, stdin=terminal, stderr=terminal, stdout=subprocess.DEVNULL)
    os.close(terminal)
    os.write(controller, typed)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        output += chunk
    proc.wait(60)
    os.close(controller)
    return output.decode(errors="replace")
