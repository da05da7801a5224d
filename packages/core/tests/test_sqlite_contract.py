"""The embedded SQLite backend passes the backend contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from bare_backend import register_bare

from chute.testing import JointContract, QueueContract, StoreContract


@pytest.fixture
def not_a_directory(tmp_path: Path) -> str:
    """An SQLite URL whose parent "directory" is a regular file: it cannot be opened."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    return f"sqlite:///{blocker}/sub/chute.db"


class SqliteFixtures:
    """The backend's fixtures, shared by every contract class below (fsspec's pattern)."""

    @pytest.fixture
    def backend_url(self, sqlite_url: str) -> str:
        return sqlite_url

    @pytest.fixture
    def unreachable_url(self, not_a_directory: str) -> str:
        return not_a_directory


class TestSqliteQueue(SqliteFixtures, QueueContract):
    pass


class TestSqliteStore(SqliteFixtures, StoreContract):
    pass


class TestSqliteJoint(SqliteFixtures, JointContract):
    pass


class TestSqliteStoreWithPayloadLimit(SqliteFixtures, StoreContract):
    """The same contract with the store's own payload cap set, so the limit tests run too."""

    @pytest.fixture
    def backend_url(self, sqlite_url: str) -> str:
        return f"{sqlite_url}?max_payload_size={16 * 1024 * 1024}"


@pytest.fixture(scope="module", autouse=True)
def bare_plugin() -> None:
    register_bare()


class TestBareQueue(QueueContract):
    """The cases of the capabilities it declares absent skip, and ``*_absent_is_said`` run."""

    @pytest.fixture
    def backend_url(self, sqlite_url: str) -> str:
        return sqlite_url.replace("sqlite:", "bare:", 1)

    @pytest.fixture
    def unreachable_url(self, not_a_directory: str) -> str:
        return not_a_directory.replace("sqlite:", "bare:", 1)


# -- the suite's guard (tested here, where a real backend subclasses it) ----------------------


def test_overriding_a_contract_test_without_xfail_fails_at_class_creation() -> None:
    with pytest.raises(TypeError, match="test_ping"):

        class Sneaky(QueueContract):
            async def test_ping(self) -> None:  # type: ignore[override]  # the point
                pass


def test_an_xfail_needs_a_reason() -> None:
    with pytest.raises(TypeError, match="test_delete"):

        class Vague(StoreContract):
            @pytest.mark.xfail
            async def test_delete(self) -> None:  # type: ignore[override]  # the point
                pass


def test_removing_a_contract_test_is_refused() -> None:
    with pytest.raises(TypeError, match="test_ping"):

        class Removed(StoreContract):
            test_ping = None  # type: ignore[assignment]  # the point


def test_a_capability_set_in_the_test_is_refused() -> None:
    """The test cannot claim what the backend does not: capabilities live on its class."""
    with pytest.raises(TypeError, match=r"sets supports_dead_letter in the test.*Queue\.supports"):

        class Claims(QueueContract):
            supports_dead_letter = False

    with pytest.raises(TypeError, match=r"Store\.purge_removes_expired"):

        class StoreClaims(StoreContract):
            purge_removes_expired = False


def test_an_override_marked_xfail_with_a_reason_is_allowed() -> None:
    class Honest(QueueContract):
        @pytest.mark.xfail(reason="this backend has no health check")
        async def test_ping(self) -> None:  # type: ignore[override]  # an xfail override
            raise AssertionError

        async def test_extra_backend_specific_behaviour(self) -> None:
            pass

    assert Honest.lease_seconds == QueueContract.lease_seconds
