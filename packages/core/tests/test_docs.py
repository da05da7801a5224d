"""Docs are part of the feature: every hook a plugin can implement is documented for plugin
authors, and the README's quick start is the one CI runs (datasette keeps the same checks)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import chute.hookspecs

ROOT = Path(__file__).resolve().parents[3]


def test_every_hook_is_documented_for_plugin_authors() -> None:
    plugins_doc = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [
        name
        for name, _ in inspect.getmembers(chute.hookspecs, inspect.isfunction)
        if name.startswith("chute_")
    ]
    assert hooks, "chute.hookspecs defines no hooks"
    missing = [name for name in hooks if f"`{name}" not in plugins_doc]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```console\n(.*?)```", readme, re.S)
    assert block is not None, "README.md has no quick-start console block"
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 2, "the quick start is exactly two command lines"
    demo, tests = lines
    assert "chute demo" in demo
    assert tests in (ROOT / ".ci" / "run").read_text(), ".ci/run must run the README's test line"


def _validate_samples() -> list[tuple[str, str, str]]:
    """(YAML, file name, console block) for each ``chute validate FILE`` sample in
    docs/configuration.md: the nearest YAML block before the console block that runs it."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    samples = []
    yaml_text = None
    for block in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        kind, body = block.group(1), block.group(2)
        run = re.match(r"\$ chute validate (\S+)\n", body)
        if kind == "yaml":
            yaml_text = body
        elif kind == "console" and run and yaml_text is not None:
            samples.append((yaml_text, run.group(1), body))
    return samples


def test_the_validate_samples_print_what_chute_validate_prints(tmp_path: Path) -> None:
    samples = _validate_samples()
    assert len(samples) == 2, "docs/configuration.md shows a valid and an invalid file"
    for yaml_text, name, console in samples:
        (tmp_path / name).write_text(yaml_text)
        done = subprocess.run(
            [sys.executable, "-m", "chute", "validate", name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = console.splitlines()[1:]
        if lines[-2:-1] == ["$ echo $?"]:
            assert done.returncode == int(lines[-1])
            lines = lines[:-2]
        assert done.stdout + done.stderr == "".join(f"{line}\n" for line in lines), name
