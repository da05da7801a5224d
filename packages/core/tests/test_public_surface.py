"""The public surface written in docs/architecture.md is real: every module it names imports,
and none of them is a private room (a name starting with ``_``)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ARCHITECTURE = Path(__file__).parents[3] / "docs" / "architecture.md"


def public_modules() -> list[str]:
    text = ARCHITECTURE.read_text()
    section = text.split("## The public surface", 1)[1].split("\n## ", 1)[0]
    modules: list[str] = []
    for row in re.findall(r"^\| (.+?) \| .+ \|$", section, re.M):
        base = ""
        for name in re.findall(r"`([\w.]+)`", row):
            if name.startswith("."):  # `chute.backends.pool`, `.urls`: beside the one before
                name = base.rsplit(".", 1)[0] + name
            if name.startswith("chute"):
                modules.append(name)
                base = name
    return modules


def test_every_public_module_imports_and_none_is_private() -> None:
    modules = public_modules()
    assert "chute.config" in modules
    assert "chute.backends.urls" in modules
    for name in modules:
        importlib.import_module(name)
        assert not any(part.startswith("_") for part in name.split(".")), name
