"""Shared fixtures for core's tests (helpers they build on are in gateway_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_support import HELLO_AND_OTHER_APIS

from chute.testing.gateway import GatewayProcess


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file (absolute path, so ``sqlite:////…``)."""
    return f"sqlite:///{tmp_path}/chute.db"


@pytest.fixture(scope="module")
def api_text() -> str:
    """The API file a module's gateway serves (override it in the module for other APIs)."""
    return HELLO_AND_OTHER_APIS


@pytest.fixture(scope="module")
def api_file(tmp_path_factory: pytest.TempPathFactory, api_text: str) -> Path:
    path = tmp_path_factory.mktemp("apis") / "api.yaml"
    path.write_text(api_text)
    return path


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file shared by a module's gateway process and its tests."""
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'chute.db'}"


@pytest.fixture
def http_timeout() -> float:
    return 30


@pytest.fixture
def http(gateway: GatewayProcess, http_timeout: float) -> Iterator[httpx.Client]:
    """A client for the module's ``gateway`` fixture."""
    with httpx.Client(base_url=gateway.url, timeout=http_timeout) as client:
        yield client
