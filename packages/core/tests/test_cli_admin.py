"""Admin commands (`chute storage init`, `chute dead-letter`) and CLI argument checks."""

from __future__ import annotations

from pathlib import Path

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
    assert main(["dead-letter", "list", "hello-world"]) == 1
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
