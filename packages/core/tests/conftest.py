"""Shared fixtures for core's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file (absolute path, so ``sqlite:////…``)."""
    return f"sqlite:///{tmp_path}/chute.db"
