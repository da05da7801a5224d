"""What every contract class shares: the fixtures a backend overrides, and the guard against
silently overridden contract tests."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

#: Where the contract classes live; tests defined there are the contract.
_CONTRACT_MODULE_PREFIX = "chute.testing."

#: Capabilities a backend declares on its own class (where the suite reads them), never in
#: its test class: setting one in a test would test a claim the backend does not make.
BACKEND_CAPABILITIES = {
    "supports_dead_letter": "Queue",
    "supports_depth": "Queue",
    "depth_counts_delayed_as_queued": "Queue",
    "min_lease": "Queue",
    "max_batch": "Queue",
    "supports_listing": "Store",
    "purge_removes_expired": "Store",
}


class BackendContract:
    """Base of :class:`~chute.testing.QueueContract` and :class:`~chute.testing.StoreContract`.

    A backend's test class overrides the ``backend_url`` fixture (and ``unreachable_url``)
    and, where the test needs more time, the tuning knobs the contract classes document. What
    the backend can do is read from the backend under test (its class's capabilities, see
    :data:`BACKEND_CAPABILITIES`): a test class that sets one is refused. A contract test may
    be overridden only to mark it ``@pytest.mark.xfail(reason="…")``: the class refuses to be
    created otherwise, so a backend cannot quietly skip part of the contract.
    """

    pytestmark = [pytest.mark.anyio]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith(_CONTRACT_MODULE_PREFIX):
            return
        declared = sorted(set(vars(cls)) & set(BACKEND_CAPABILITIES))
        if declared:
            where = ", ".join(f"{BACKEND_CAPABILITIES[name]}.{name}" for name in declared)
            raise TypeError(
                f"{cls.__qualname__} sets {', '.join(declared)} in the test; a capability is "
                f"declared by the backend's own class ({where}), where callers and this suite "
                "read it from the backend under test"
            )
        contract_tests = {
            name
            for base in cls.__mro__[1:]
            if base.__module__.startswith(_CONTRACT_MODULE_PREFIX)
            for name in vars(base)
            if name.startswith("test_")
        }
        offending = sorted(
            name for name in contract_tests & set(vars(cls)) if not _xfailed(vars(cls)[name])
        )
        if offending:
            raise TypeError(
                f"{cls.__qualname__} overrides contract tests without "
                f'@pytest.mark.xfail(reason="..."): {", ".join(offending)}. Mark the override '
                "xfail with a reason that says why the backend cannot pass it, or declare the "
                "capability absent on the backend's class (e.g. Queue.supports_depth = False)."
            )

    # -- fixtures a backend overrides ----------------------------------------------------

    @pytest.fixture
    def backend_url(self) -> str:
        """The URL of a live backend to test, e.g. ``redis://127.0.0.1:6379/15``.

        The suite opens it with ``chute.open_queue``/``chute.open_store``, so the plugin's
        entry point and scheme registration are tested too. Tests use unique API names (the
        ``api`` fixture), so the backend may be shared between tests.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must override the backend_url fixture"
        )

    @pytest.fixture
    def unreachable_url(self) -> str:
        """A URL with the backend's scheme that points at nothing (a closed port, a path that
        cannot be created): opening or using it must raise chute's BackendUnavailable."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must override the unreachable_url fixture"
        )

    # -- fixtures with defaults ------------------------------------------------------------

    @pytest.fixture
    def api(self) -> str:
        """A fresh API name per test, so tests never see each other's messages or records."""
        return f"contract-{uuid.uuid4().hex[:12]}"


def _xfailed(member: object) -> bool:
    marks = getattr(member, "pytestmark", [])
    return any(mark.name == "xfail" and mark.kwargs.get("reason") for mark in marks)
