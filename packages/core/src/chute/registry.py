"""Backends found by URL scheme, through pluggy plugins loaded lazily on first lookup."""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import pluggy

from chute import hookspecs
from chute.errors import (
    ChuteError,
    ConfigError,
    DuplicateSchemeError,
    PluginError,
    UnknownSchemeError,
)

if TYPE_CHECKING:
    from chute.backends.base import Queue, Store

QueueFactory = Callable[[str], "Queue"]
StoreFactory = Callable[[str], "Store"]
_F = TypeVar("_F")

#: Schemes served by first-party distributions, and the extra that installs each.
KNOWN_EXTRAS = {
    "redis": "chute[redis]",
    "rediss": "chute[redis]",
    "sqs": "chute[sqs]",
    "s3": "chute[sqs]",
    "gs": "chute[gcs]",
    "pubsub": "chute[gcs]",
}

#: The roles each first-party scheme serves, so a bucket URL given as a queue gets the right
#: advice ("pass it to --store") instead of an install hint that cannot help.
KNOWN_ROLES = {
    "redis": frozenset({"queue", "store"}),
    "rediss": frozenset({"queue", "store"}),
    "sqs": frozenset({"queue"}),
    "s3": frozenset({"store"}),
    "gs": frozenset({"store"}),
    "pubsub": frozenset({"queue"}),
}

#: Used wherever no URL is given: the embedded backend, under ./.chute/.
DEFAULT_URL = "sqlite:///.chute/chute.db"

#: The environment variables that name the backends when no flag does.
URL_ENV = {"queue": "CHUTE_QUEUE_URL", "store": "CHUTE_STORE_URL"}


def resolve_url(role: str, explicit: str | None, default: str = DEFAULT_URL) -> str:
    """The backend URL for ``role`` ("queue" or "store"): the flag, else its environment
    variable (``CHUTE_QUEUE_URL`` / ``CHUTE_STORE_URL``), else ``default``."""
    return explicit or os.environ.get(URL_ENV[role]) or default


class _Claims(dict[str, tuple[_F, str]]):
    def claim(self, role: str, scheme: str, factory: _F, plugin: str) -> None:
        scheme = scheme.lower()
        if scheme in self and self[scheme][1] != plugin:
            raise DuplicateSchemeError(
                f"{role} scheme {scheme!r} is claimed by two plugins: "
                f"{self[scheme][1]!r} and {plugin!r}; uninstall one of them"
            )
        self[scheme] = (factory, plugin)


class BackendRegistry:
    """What plugins register into: URL scheme → factory, for each role."""

    def __init__(self) -> None:
        self.queues: _Claims[QueueFactory] = _Claims()
        self.stores: _Claims[StoreFactory] = _Claims()
        self._plugin = "<unknown>"

    def add_queue(self, scheme: str, factory: QueueFactory) -> None:
        self.queues.claim("queue", scheme, factory, self._plugin)

    def add_store(self, scheme: str, factory: StoreFactory) -> None:
        self.stores.claim("store", scheme, factory, self._plugin)


class PluginManager:
    """chute's pluggy manager. Entry points load on the first lookup, not at import."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._load_entry_points = load_entry_points
        self._registry: BackendRegistry | None = None
        self._lock = threading.Lock()

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object or module directly (tests, embedding applications)."""
        self.pm.register(plugin, name)
        self._registry = None

    @property
    def backends(self) -> BackendRegistry:
        with self._lock:
            if self._registry is None:
                self._registry = self._collect()
            return self._registry

    def _collect(self) -> BackendRegistry:
        if self._load_entry_points:
            self._load_plugins()
            self._load_entry_points = False
        registry = BackendRegistry()
        for impl in self.pm.hook.chute_register_backends.get_hookimpls():
            registry._plugin = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            try:
                impl.function(registry=registry)
            except ChuteError:
                raise
            except Exception as exc:  # a broken plugin must name itself
                raise PluginError(
                    f"chute plugin {registry._plugin!r} failed to register its backends: {exc!r}"
                ) from exc
        return registry

    def _load_plugins(self) -> None:
        """Load every entry point in group ``chute``, one by one, so that a broken plugin is
        reported with its name and distribution (pluggy's loader would not say which)."""
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME):
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue  # the same distribution seen twice on sys.path, or blocked
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:
                dist = f" (distribution {ep.dist.name})" if ep.dist is not None else ""
                raise PluginError(
                    f"chute plugin {ep.name!r} = {ep.value!r}{dist} failed to load: {exc!r}; "
                    "reinstall or uninstall it"
                ) from exc

    def open_queue(self, url: str) -> Queue:
        backends = self.backends
        return _factory(backends.queues, backends.stores, "queue", url)(url)

    def open_store(self, url: str) -> Store:
        backends = self.backends
        return _factory(backends.stores, backends.queues, "store", url)(url)


def _factory(claims: _Claims[_F], others: _Claims[Any], role: str, url: str) -> _F:
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConfigError(f"{role} URL {url!r} has no scheme (expected e.g. {DEFAULT_URL})")
    if scheme in claims:
        return claims[scheme][0]
    known = ", ".join(f"{s}://" for s in sorted(claims)) or "none"
    other = "store" if role == "queue" else "queue"
    if scheme in others or role not in KNOWN_ROLES.get(scheme, {role}):
        advice = f"; {scheme}:// is a {other} backend, not a {role}: pass it as the {other} URL"
    elif scheme in KNOWN_EXTRAS:
        from chute.install import install_line

        extra = KNOWN_EXTRAS[scheme].removeprefix("chute[").removesuffix("]")
        advice = f"; install it with: {install_line(extra)}"
    else:
        advice = ""
    raise UnknownSchemeError(
        f"no {role} backend handles {scheme}:// (in {url!r}); known {role} schemes: {known}{advice}"
    )


_default: PluginManager | None = None


def plugin_manager() -> PluginManager:
    """The process-wide plugin manager."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default


def open_queue(url: str) -> Queue:
    """Open the queue backend a URL names (``sqlite:///…``, ``redis://…``, …)."""
    return plugin_manager().open_queue(url)


def open_store(url: str) -> Store:
    """Open the store backend a URL names."""
    return plugin_manager().open_store(url)
