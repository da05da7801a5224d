"""The Redis queue and store pass chute's backend contract suite against a real server."""

from __future__ import annotations

import pytest

from chute.testing import JointContract, QueueContract, StoreContract, free_port


def _closed_port_url() -> str:
    # One reconnect attempt, so the test does not wait out the whole backoff.
    return f"redis://127.0.0.1:{free_port()}/0?retries=1"


class RedisFixtures:
    """The backend's fixtures, shared by the contract classes below (fsspec's pattern)."""

    @pytest.fixture
    def backend_url(self, redis_url: str) -> str:
        return redis_url

    @pytest.fixture
    def unreachable_url(self) -> str:
        return _closed_port_url()


class TestRedisQueue(RedisFixtures, QueueContract):
    pass


class TestRedisStore(RedisFixtures, StoreContract):
    pass


class TestRedisJoint(RedisFixtures, JointContract):
    pass
