"""chute.testing.services finds a service in DESIGN.md's order, with Redis as the example."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from chute.testing import free_port
from chute.testing.services import REDIS, find_service, redis_probe, unavailable


def test_an_explicit_url_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHUTE_TEST_REDIS_URL", "redis://elsewhere:7000/2")
    with find_service(REDIS, tmp_path) as found:
        assert (found.url, found.source, found.server) == (
            "redis://elsewhere:7000/2",
            "environment",
            None,
        )


def test_a_server_on_the_standard_port_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CHUTE_TEST_REDIS_URL", raising=False)
    if not redis_probe("127.0.0.1", 6379):
        unavailable("no Redis on 127.0.0.1:6379 to find")
    with find_service(REDIS, tmp_path) as found:
        assert (found.url, found.source) == ("redis://127.0.0.1:6379", "port")


def test_else_the_binary_is_started_and_stopped(tmp_path: Path) -> None:
    spec = dataclasses.replace(REDIS, default_port=free_port(), env_var="CHUTE_TEST_NOPE_URL")
    if spec.binary is None or not shutil.which(spec.binary):
        unavailable("no redis-server binary")
    with find_service(spec, tmp_path) as found:
        assert found.source == "binary"
        assert found.server is not None
        port = found.server.port
        assert redis_probe("127.0.0.1", port)
    assert not redis_probe("127.0.0.1", port), "the server outlived its fixture"


@pytest.mark.parametrize(
    ("required", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)]
)
def test_else_skip_or_fail_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CHUTE_REQUIRE_SERVICES", required)
    spec = dataclasses.replace(
        REDIS,
        default_port=free_port(),
        env_var="CHUTE_TEST_NOPE_URL",
        binary="redis-server-that-is-not-installed",
        docker_image=None,
    )
    with pytest.raises(outcome) as err, find_service(spec, tmp_path):
        pass
    message = str(err.value)
    assert "CHUTE_TEST_NOPE_URL is not set" in message
    assert "no redis-server-that-is-not-installed on PATH" in message
