"""Docs are part of the feature: every hook a plugin can implement is documented for plugin
authors, and the README's quick start is the one CI runs (datasette keeps the same checks)."""

from __future__ import annotations

import inspect
import re
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
