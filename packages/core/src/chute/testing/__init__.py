"""Testing chute and its plugins (``pip install "chute[testing]"``).

* The backend contract suite: every queue and store backend, first-party or third-party, proves
  itself by subclassing these classes in its own tests and overriding one fixture,
  ``backend_url``::

      from chute.testing import QueueContract, StoreContract

      class TestMyQueue(QueueContract):
          @pytest.fixture
          def backend_url(self) -> str:
              return "mine://127.0.0.1:9999/test"

  A contract test may be overridden only to mark it ``xfail`` with a reason. See
  docs/plugins.md.
* Helpers: :func:`free_port`, :func:`eventually`, :func:`eventually_async` and :func:`http`
  (one-off HTTP requests without building a client each time).
* A pytest plugin (:mod:`chute.testing.plugin`, loaded wherever chute and pytest are
  installed) with the fixtures chute's suites and a plugin author's share: ``anyio_backend``,
  ``redis_service``, ``moto_service``, ``gcs_service``, ``pubsub_service``. See
  docs/testing.md.

The names are imported on first use, so that loading the plugin (in every pytest run where
chute is installed) costs little.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

#: The modules whose plain asserts should explain themselves like asserts in test files.
REWRITTEN = ("chute.testing.queue", "chute.testing.store", "chute.testing.joint")
# Only under pytest (chute's pytest plugin does it too, first): a process that uses only the
# echo container or the helpers does not pay for importing pytest.
if "pytest" in sys.modules:
    sys.modules["pytest"].register_assert_rewrite(*REWRITTEN)

if TYPE_CHECKING:
    from chute._net import free_port
    from chute.testing.contract import BackendContract
    from chute.testing.http import http
    from chute.testing.joint import JointContract
    from chute.testing.queue import QueueContract
    from chute.testing.store import StoreContract, body_of, new_record
    from chute.testing.waiting import eventually, eventually_async

_WHERE = {
    "BackendContract": "chute.testing.contract",
    "JointContract": "chute.testing.joint",
    "QueueContract": "chute.testing.queue",
    "StoreContract": "chute.testing.store",
    "body_of": "chute.testing.store",
    "new_record": "chute.testing.store",
    "free_port": "chute._net",
    "http": "chute.testing.http",
    "eventually": "chute.testing.waiting",
    "eventually_async": "chute.testing.waiting",
}

__all__ = [
    "BackendContract",
    "JointContract",
    "QueueContract",
    "StoreContract",
    "body_of",
    "eventually",
    "eventually_async",
    "free_port",
    "http",
    "new_record",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'chute.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
