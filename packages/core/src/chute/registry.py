"""Backends found by URL scheme, and chute's plugin manager: plugins loaded lazily on first
lookup, checked when they load, and called through one typed method per hook."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
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
    from chute.cli import CommandRegistrar

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

#: Plugins that ship inside core: registered directly (they need no entry point), so they are
#: there with auto-loading off too. Blocking their name still keeps them out.
BUILTIN_PLUGINS = {"sqlite": "chute.backends._sqlite"}

#: Set (to anything but ``0``/``false``/``no``): entry points do not load by themselves.
DISABLE_AUTOLOAD_ENV = "CHUTE_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated entry point names to load even with auto-loading off.
PLUGINS_ENV = "CHUTE_PLUGINS"
#: Comma-separated plugin names that never load (pluggy's ``set_blocked``).
BLOCK_PLUGINS_ENV = "CHUTE_BLOCK_PLUGINS"


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _switched_on(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no")


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
    """chute's pluggy manager. Plugins load on the first lookup, not at import.

    Callers use its typed methods (:attr:`backends`, :meth:`open_queue`, :meth:`add_commands`,
    ...) and never call a hook through pluggy; a plugin that defines hooks of its own adds them
    with :meth:`add_hookspecs` and gives them typed callers the same way (chute-k8s's
    ``chute_k8s.hooks.K8sHooks``).

    What loads: core's built-in plugins (:data:`BUILTIN_PLUGINS`), then every entry point in
    group ``chute``, unless ``$CHUTE_DISABLE_PLUGIN_AUTOLOAD`` is set (then only those named in
    ``$CHUTE_PLUGINS``). Plugins named in ``$CHUTE_BLOCK_PLUGINS`` never load.
    ``load_entry_points=False`` loads nothing at all: the caller registers what it needs.
    """

    def __init__(
        self,
        *,
        load_entry_points: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._hookspecs: list[ModuleType | type] = [hookspecs]
        #: Plugin names ``$CHUTE_BLOCK_PLUGINS`` blocks.
        self.blocked = _names(env.get(BLOCK_PLUGINS_ENV, ""))
        for name in self.blocked:
            self.pm.set_blocked(name)
        #: Whether entry points load by themselves (``$CHUTE_DISABLE_PLUGIN_AUTOLOAD`` unset).
        self.autoload = not _switched_on(env.get(DISABLE_AUTOLOAD_ENV, ""))
        self._only = _names(env.get(PLUGINS_ENV, ""))
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._skipped: dict[str, str] = {}
        self._registry: BackendRegistry | None = None
        self._lock = threading.RLock()
        # Historic: every plugin, registered now or later, adds its own hooks first.
        self.pm.hook.chute_add_hookspecs.call_historic(kwargs={"manager": self})

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object or module directly (tests, embedding applications). A
        blocked name is ignored; once plugins are loaded, an implementation of an unknown hook
        raises :class:`~chute.errors.PluginError` at once."""
        label = name or getattr(plugin, "__name__", None) or repr(plugin)
        with self._lock:
            try:
                self.pm.register(plugin, name)
            except (ValueError, pluggy.PluginValidationError) as exc:
                raise PluginError(
                    f"chute plugin {label!r} cannot be registered: {_one_line(exc)}"
                ) from exc
            self._registry = None
            if self._loaded:
                self._check_pending()

    def add_hookspecs(self, module: ModuleType | type) -> None:
        """Add a plugin's own hook specifications (from its ``chute_add_hookspecs``); adding
        the same module again does nothing."""
        with self._lock:
            if module in self._hookspecs:
                return
            try:
                self.pm.add_hookspecs(module)
            except (ValueError, pluggy.PluginValidationError) as exc:
                raise PluginError(f"hook specifications of {module!r}: {_one_line(exc)}") from exc
            self._hookspecs.append(module)

    def get_plugin(self, name: str) -> object | None:
        """The plugin registered (or loaded) under ``name``, or None."""
        return self.pm.get_plugin(name)

    def has_hook(self, name: str) -> bool:
        """Whether a hook named ``name`` is declared (by core or a loaded plugin)."""
        caller = getattr(self.pm.hook, name, None)
        return caller is not None and caller.has_spec()

    def load(self) -> None:
        """Load the plugins (once; again after a failure), then check that every hook
        implementation names a declared hook. Raises :class:`~chute.errors.PluginError`
        naming the plugin that failed to load, or the plugin and the hook it misspelt."""
        with self._lock:
            if self._loaded:
                return
            if self._load_entry_points:
                for name, module in BUILTIN_PLUGINS.items():
                    if self.pm.is_blocked(name):
                        self._skipped[name] = f"blocked by {BLOCK_PLUGINS_ENV}"
                    elif self.pm.get_plugin(name) is None:
                        self.pm.register(importlib.import_module(module), name)
                self._load_plugins()
            self._check_pending()
            self._loaded = True

    def _check_pending(self) -> None:
        """pluggy's ``check_pending``, as a chute error that names the plugin, the hook and
        the nearest declared one (pluggy's own names the plugin object only)."""
        callers = vars(self.pm.hook)
        declared = sorted(n for n, c in callers.items() if c.has_spec())
        for name, caller in sorted(callers.items()):
            if caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                plugin = self.pm.get_name(impl.plugin) or repr(impl.plugin)
                close = difflib.get_close_matches(name, declared, n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else "the hooks are: " + (", ".join(declared))
                )
                raise PluginError(
                    f"chute plugin {plugin!r} implements {name!r}, a hook that neither chute "
                    f"nor a loaded plugin declares; {hint} (a hook of a plugin that may be "
                    "absent is marked @hookimpl(optionalhook=True))"
                )
        try:
            self.pm.check_pending()  # finds nothing more today; kept as pluggy's word on it
        except pluggy.PluginValidationError as exc:
            raise PluginError(_one_line(exc)) from exc

    @property
    def backends(self) -> BackendRegistry:
        """Every queue and store factory, by scheme (hook ``chute_register_backends``)."""
        with self._lock:
            self.load()
            if self._registry is None:
                self._registry = self._collect()
            return self._registry

    def _collect(self) -> BackendRegistry:
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

    def add_commands(self, commands: CommandRegistrar) -> None:
        """Let every plugin add its subcommands (hook ``chute_add_commands``). Raises
        :class:`~chute.errors.PluginError` naming a plugin whose hook fails; the commands the
        others added stay."""
        self.load()
        for impl in self.pm.hook.chute_add_commands.get_hookimpls():
            plugin = self.pm.get_name(impl.plugin) or repr(impl.plugin)
            try:
                impl.function(commands=commands)
            except ChuteError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"chute plugin {plugin!r} failed to add its commands: {exc!r}"
                ) from exc

    def _load_plugins(self) -> None:
        """Load the entry points in group ``chute`` (every one, or with auto-loading off those
        ``$CHUTE_PLUGINS`` names), one by one, so that a broken plugin is reported with its name
        and distribution (pluggy's loader would not say which)."""
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME):
            if self.pm.is_blocked(ep.name):
                self._skipped[ep.name] = f"blocked by {BLOCK_PLUGINS_ENV}"
                continue
            if not self.autoload and ep.name not in self._only:
                self._skipped[ep.name] = f"plugin auto-loading is off ({DISABLE_AUTOLOAD_ENV})"
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:
                dist = f" (distribution {ep.dist.name})" if ep.dist is not None else ""
                raise PluginError(
                    f"chute plugin {ep.name!r} = {ep.value!r}{dist} failed to load: {exc!r}; "
                    "reinstall or uninstall it"
                ) from exc

    def not_loaded(self, name: str | None = None) -> str:
        """Why the installed plugin ``name`` did not load (auto-loading off, or blocked), or
        ``""`` when it loaded or is not installed; without a name, every such plugin."""
        if name is not None:
            return self._skipped.get(name, "")
        return "; ".join(f"{n}: {why}" for n, why in sorted(self._skipped.items()))

    def open_queue(self, url: str) -> Queue:
        """The queue backend ``url`` names."""
        backends = self.backends
        return _factory(backends.queues, backends.stores, "queue", url, self.not_loaded)(url)

    def open_store(self, url: str) -> Store:
        """The store backend ``url`` names."""
        backends = self.backends
        return _factory(backends.stores, backends.queues, "store", url, self.not_loaded)(url)


def _first_party_plugin(scheme: str) -> str:
    """The entry point name of the first-party plugin serving ``scheme`` (``""``: none)."""
    if scheme in BUILTIN_PLUGINS:
        return scheme
    return KNOWN_EXTRAS.get(scheme, "").removeprefix("chute[").removesuffix("]")


def _factory(
    claims: _Claims[_F],
    others: _Claims[Any],
    role: str,
    url: str,
    not_loaded: Callable[..., str] = lambda name=None: "",
) -> _F:
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise ConfigError(f"{role} URL {url!r} has no scheme (expected e.g. {DEFAULT_URL})")
    if scheme in claims:
        return claims[scheme][0]
    known = ", ".join(f"{s}://" for s in sorted(claims)) or "none"
    other = "store" if role == "queue" else "queue"
    if scheme in others or role not in KNOWN_ROLES.get(scheme, {role}):
        advice = f"; {scheme}:// is a {other} backend, not a {role}: pass it as the {other} URL"
    elif why := not_loaded(_first_party_plugin(scheme)):
        advice = f"; its plugin {_first_party_plugin(scheme)!r} is installed but not loaded: {why}"
    elif scheme in KNOWN_EXTRAS:
        from chute.install import install_line

        extra = KNOWN_EXTRAS[scheme].removeprefix("chute[").removesuffix("]")
        advice = f"; install it with: {install_line(extra)}"
    elif why := not_loaded():
        advice = f"; installed plugins not loaded: {why}"
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
