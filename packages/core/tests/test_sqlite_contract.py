"""The embedded SQLite backend passes the backend contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from chute.testing import QueueContract, StoreContract


@pytest.fixture
def not_a_directory(tmp_path: Path) -> str:
    """An SQLite URL whose parent "directory" is a regular file: it cannot be opened."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    return f"sqlite:///{blocker}/sub/chute.db"


class TestSqliteQueue(QueueContract):
    @pytest.fixture
    def backend_url(self, sqlite_url: str) -> str:
        return sqlite_url

    @pytest.fixture
    def unreachable_url(self, not_a_directory: str) -> str:
        return not_a_directory


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def backend_url(self, sqlite_url: str) -> str:
        return sqlite_url

    @pytest.fixture
    def unreachable_url(self, not_a_directory: str) -> str:
        return not_a_directory
