"""The backend contract suite (``pip install "chute[testing]"``).

Every queue and store backend, first-party or third-party, proves itself by subclassing these
classes in its own tests and overriding one fixture, ``backend_url``::

    from chute.testing import QueueContract, StoreContract

    class TestMyQueue(QueueContract):
        @pytest.fixture
        def backend_url(self) -> str:
            return "mine://127.0.0.1:9999/test"

Capability flags (class attributes) declare what a backend cannot do; a contract test may be
overridden only to mark it ``xfail`` with a reason. See docs/plugins.md.
"""

import pytest

# Plain asserts in the contract classes should explain themselves like asserts in test files.
pytest.register_assert_rewrite("chute.testing.queue", "chute.testing.store", "chute.testing.joint")

from chute.testing.contract import BackendContract  # noqa: E402
from chute.testing.joint import JointContract  # noqa: E402
from chute.testing.queue import QueueContract  # noqa: E402
from chute.testing.store import StoreContract, body_of, new_record  # noqa: E402

__all__ = [
    "BackendContract",
    "JointContract",
    "QueueContract",
    "StoreContract",
    "body_of",
    "new_record",
]
