"""``chute validate`` reports every problem of a file in one run, each with its path and the
line it is written on (issue 15, item 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chute.config import ConfigValidationError, loads_apis

THREE_TYPOS = """\
- name: hello
  kind: AsyncAPI
  pod:
    prot: 8080
    max_concurency: 2
    containers:
      - name: api
        image: quay.io/chute/hello:1
        comand: ["python", "app.py"]
        env:
          GREETING: 1
- name: other
  kind: AsyncAPI
  pod:
    port: "8080"
"""


def test_every_problem_with_its_path_and_line() -> None:
    try:
        loads_apis(THREE_TYPOS, file="apis.yaml")
    except ConfigValidationError as exc:
        found = [(i.line, i.path, i.message.split(";")[0]) for i in exc.issues]
    else:
        raise AssertionError("the file is invalid")
    assert found == [
        (4, "$[0].pod.prot", "unknown key"),
        (5, "$[0].pod.max_concurency", "unknown key"),
        (9, "$[0].pod.containers[0].comand", "unknown key"),
        (11, "$[0].pod.containers[0].env.GREETING", "expected a string (got an integer)"),
        (15, "$[1].pod.port", "expected an integer (got a string)"),
        (14, "$[1].pod.containers", "required key is missing"),
    ]


def test_chute_validate_prints_them_all_in_one_run(tmp_path: Path) -> None:
    file = tmp_path / "apis.yaml"
    file.write_text(THREE_TYPOS)
    done = subprocess.run(
        [sys.executable, "-m", "chute", "validate", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3  # a configuration problem (docs/cli.md)
    lines = done.stderr.splitlines()
    assert len(lines) == 6, done.stderr
    assert lines[0].startswith(f"{file}:4: $[0].pod.prot: unknown key; did you mean 'port'?")
    assert lines[2].startswith(f"{file}:9: $[0].pod.containers[0].comand: unknown key")
    assert "Traceback" not in done.stderr
