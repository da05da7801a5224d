"""The ``chute`` command's conventions (issue 15, items 8 and 10): the documented exit-status
table is the code's, every command and argument has help, the same flag has the same name and
unit everywhere (old spellings still work, hidden), the dequeuer has --version and --log-level,
and the gateway's access log can be switched on and off."""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import HELLO_API, serving

from chute.cli import _exit, build_parser, main
from chute.config import loads_apis
from chute.gateway import Gateway
from chute.gateway._access_log import enabled

ROOT = Path(__file__).resolve().parents[3]


def test_the_documented_exit_statuses_are_the_codes() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    documented = [int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)]
    codes = [
        value
        for name, value in vars(_exit).items()
        if name.isupper() and isinstance(value, int) and not name.startswith("_")
    ]
    assert documented == sorted(codes)
    assert len(set(codes)) == len(codes), "two meanings share a number"


def _commands(parser: argparse.ArgumentParser, prefix: str = "chute") -> list[Any]:
    """(name, parser) of every command and subcommand."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{prefix} {name}", sub))
                found += _commands(sub, f"{prefix} {name}")
    return found


def test_every_command_and_argument_has_help() -> None:
    commands = _commands(build_parser())
    names = {name for name, _ in commands}
    assert {"chute submit", "chute dev", "chute dead-letter purge"} <= names
    try:
        import chute_k8s  # noqa: F401
    except ImportError:
        pass
    else:
        assert {"chute deploy", "chute delete", "chute status"} <= names
    missing = []
    for name, parser in commands:
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


@pytest.mark.parametrize("command", [["submit"], ["deploy"], ["status"], ["delete"], ["dev"]])
def test_help_runs(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: chute" in capsys.readouterr().out


def test_submit_help_explains_api_name_and_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "API is the API's `name` from the API file" in out
    assert "networking.endpoint" in out


def test_grace_period_is_one_flag_everywhere_with_the_old_spelling_hidden(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    for old, new in (["--graceful-timeout", "7"], ["--grace-period", "7"]):
        args = parser.parse_args(["gateway", "api.yaml", old, new])
        assert args.grace_period == 7.0
    with pytest.raises(SystemExit):
        main(["gateway", "--help"])
    help_text = capsys.readouterr().out
    assert "--grace-period" in help_text
    assert "--graceful-timeout" not in help_text
    for command in (["dev", "api.yaml"],):
        assert parser.parse_args([*command, "--grace-period", "3"]).grace_period == 3.0


def test_the_dequeuer_has_version_log_level_and_size_units() -> None:
    from chute_dequeuer.cli import build_parser as dequeuer_parser

    version = subprocess.run(
        [sys.executable, "-m", "chute_dequeuer", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.returncode == 0
    assert re.fullmatch(r"chute-dequeuer \d+\.\d+\.\d+\S*\n", version.stdout)
    parser = dequeuer_parser()
    base = ["--api-file", "a.yaml", "--api", "x"]
    args = parser.parse_args([*base, "--log-level", "debug", "--max-result-size", "1KiB"])
    assert (args.log_level, args.max_result_size) == ("DEBUG", 1024)
    assert parser.parse_args([*base, "--max-result-size", "2048"]).max_result_size == 2048
    bad = subprocess.run(
        [sys.executable, "-m", "chute_dequeuer", *base, "--log-level", "loud"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "--log-level" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_access_log_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert enabled(True, default=False) is True
    assert enabled(False, default=True) is False
    monkeypatch.setenv("CHUTE_ACCESS_LOG", "0")
    assert enabled(None, default=True) is False
    monkeypatch.setenv("CHUTE_ACCESS_LOG", "yes")
    assert enabled(None, default=False) is True
    monkeypatch.delenv("CHUTE_ACCESS_LOG")
    assert enabled(None, default=True) is True
    parser = build_parser()
    assert parser.parse_args(["gateway", "a.yaml", "--no-access-log"]).access_log is False
    assert parser.parse_args(["dev", "a.yaml", "--access-log"]).access_log is True


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.anyio
@pytest.mark.parametrize("on", [True, False])
async def test_gateway_access_log_lines(on: bool, sqlite_url: str) -> None:
    records = _Records()
    logger = logging.getLogger("chute.access")
    logger.addHandler(records)
    try:
        app = Gateway(
            loads_apis(HELLO_API), queue_url=sqlite_url, store_url=sqlite_url, access_log=on
        )
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            submitted = await http.post("/hello", json={"n": 1})
            request_id = submitted.json()["id"]
            read = await http.get(f"/hello/{request_id}")
            missing = await http.get("/nowhere")
    finally:
        logger.removeHandler(records)
    lines = [vars(r) for r in records.records]
    if not on:
        assert lines == []
        return
    by_path = {(line["method"], line["path"]): line for line in lines}
    post = by_path["POST", "/hello"]
    assert (post["status"], post["request_id"]) == (200, request_id)
    assert post["bytes"] == len(submitted.content)
    get = by_path["GET", f"/hello/{request_id}"]
    assert (get["status"], get["bytes"], get["request_id"]) == (200, len(read.content), request_id)
    assert get["duration"] >= 0
    nowhere = by_path["GET", "/nowhere"]
    assert (nowhere["status"], nowhere["bytes"]) == (404, len(missing.content))
    assert "request_id" not in nowhere


@pytest.mark.anyio
async def test_an_unreachable_backend_is_named_in_healthz_and_its_log_line(sqlite_url: str) -> None:
    """Issue 15, item 4: the gateway's log line for /healthz has no empty ``api=``; it names
    the route and which backend did not answer."""
    records = _Records()
    logger = logging.getLogger("chute.gateway")
    logger.addHandler(records)
    down = "redis://127.0.0.1:1/3"
    try:
        app = Gateway(loads_apis(HELLO_API), queue_url=down, store_url=sqlite_url)
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            health = await http.get("/healthz")
    finally:
        logger.removeHandler(records)
    assert health.status_code == 503
    assert "redis://127.0.0.1:1/3" in health.json()["error"]["message"]
    [line] = [vars(r) for r in records.records if r.getMessage() == "backend unavailable"]
    assert "api" not in line
    assert line["path"] == "/healthz"
    assert "redis://127.0.0.1:1/3" in line["error"]
