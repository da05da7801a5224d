"""The plugin registry: backends found by URL scheme through pluggy, loaded lazily."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chute.backends._sqlite.queue import SqliteQueue
from chute.backends._sqlite.store import SqliteStore
from chute.backends.base import Queue, Store
from chute.errors import (
    ConfigError,
    DuplicateSchemeError,
    PluginError,
    UnknownSchemeError,
)
from chute.hookspecs import hookimpl
from chute.install import install_line
from chute.registry import BackendRegistry, PluginManager


class _Plugin:
    """A small plugin that claims ``scheme`` for the roles it is given and records the URLs
    its factories were called with."""

    def __init__(self, scheme: str, *, queue: bool = True, store: bool = True) -> None:
        self.scheme, self.queue, self.store = scheme, queue, store
        self.opened: list[str] = []

    def _open(self, url: str) -> Queue:
        self.opened.append(url)
        return SqliteQueue(f"sqlite:///{Path('unused.db').absolute()}")

    def _open_store(self, url: str) -> Store:
        self.opened.append(url)
        return SqliteStore(f"sqlite:///{Path('unused.db').absolute()}")

    @hookimpl
    def chute_register_backends(self, registry: BackendRegistry) -> None:
        if self.queue:
            registry.add_queue(self.scheme, self._open)
        if self.store:
            registry.add_store(self.scheme, self._open_store)


def isolated(*plugins: tuple[str, object]) -> PluginManager:
    pm = PluginManager(load_entry_points=False)
    for name, plugin in plugins:
        pm.register(plugin, name)
    return pm


# -- lookup -----------------------------------------------------------------------------------


def test_the_sqlite_backend_is_a_plugin_built_into_core() -> None:
    """Registered directly under its name (it needs no entry point), and served through the
    same hook as any other plugin."""
    pm = PluginManager()
    assert pm.backends.queues["sqlite"][1] == "sqlite"
    assert pm.backends.stores["sqlite"][1] == "sqlite"
    assert isinstance(pm.open_queue("sqlite:////tmp/chute-registry-test.db"), SqliteQueue)


def test_factories_get_the_whole_url_and_schemes_ignore_case() -> None:
    plugin = _Plugin("mem")
    pm = isolated(("mem", plugin))
    pm.open_queue("MEM://host:1/path?x=1")
    pm.open_store("mem://other")
    assert plugin.opened == ["MEM://host:1/path?x=1", "mem://other"]


def test_unknown_scheme_names_the_known_schemes_and_the_extra_to_install() -> None:
    """A first-party scheme whose distribution is not installed: the error lists what is
    available and the extra that adds the missing one."""
    pm = isolated(("sqlite", _Plugin("sqlite")))
    with pytest.raises(UnknownSchemeError) as caught:
        pm.open_queue("redis://somewhere:6379/0")
    message = str(caught.value)
    assert "no queue backend handles redis://" in message
    assert "known queue schemes: sqlite://" in message  # what is available instead
    # The line that works here: this checkout's directory, or the published extra.
    assert f"install it with: {install_line('redis')}" in message
    with pytest.raises(UnknownSchemeError, match=r"install it with: .*gcs"):
        pm.open_queue("pubsub://my-project/chute")


def test_the_install_hint_fits_how_chute_was_installed(tmp_path: Path) -> None:
    """From PyPI the published extra; from a clone's directory (plain or editable, as pip's
    direct_url.json records it) the sibling package's directory, which needs no index."""
    assert install_line("redis", direct_url=None) == 'pip install "chute[redis]"'
    wheel = '{"url": "https://example.org/chute-0.1.0.whl", "archive_info": {}}'
    assert install_line("redis", direct_url=wheel) == 'pip install "chute[redis]"'
    for name in ("core", "backends-redis", "dequeuer"):
        (tmp_path / "my clone" / "packages" / name).mkdir(parents=True)
        (tmp_path / "my clone" / "packages" / name / "pyproject.toml").write_text("")
    packages = tmp_path / "my clone" / "packages"
    core_url = (packages / "core").as_uri()
    plain = f'{{"url": "{core_url}", "dir_info": {{}}}}'
    editable = f'{{"url": "{core_url}", "dir_info": {{"editable": true}}}}'
    assert install_line("redis", direct_url=plain) == f"pip install '{packages}/backends-redis'"
    assert install_line("dequeuer", direct_url=editable) == f"pip install -e '{packages}/dequeuer'"
    # A package the clone does not have: the published form, not a path that does not exist.
    assert install_line("sqs", direct_url=plain) == 'pip install "chute[sqs]"'


@pytest.mark.parametrize(
    ("scheme", "role", "other"),
    [
        ("gs", "queue", "store"),
        ("s3", "queue", "store"),
        ("sqs", "store", "queue"),
        ("pubsub", "store", "queue"),
    ],
)
def test_a_scheme_given_in_the_wrong_role_says_so(scheme: str, role: str, other: str) -> None:
    """A bucket URL passed as the queue (a common slip) must not advise installing an extra
    that cannot help, installed or not."""
    for pm in (isolated(("sqlite", _Plugin("sqlite"))), PluginManager()):
        open_ = pm.open_queue if role == "queue" else pm.open_store
        with pytest.raises(UnknownSchemeError) as caught:
            open_(f"{scheme}://bucket/prefix")
        message = str(caught.value)
        assert f"{scheme}:// is a {other} backend, not a {role}" in message
        assert "pip install" not in message


def test_unknown_third_party_scheme_has_no_install_hint() -> None:
    pm = isolated(("mem", _Plugin("mem")))
    with pytest.raises(UnknownSchemeError, match=r"known store schemes: mem://$"):
        pm.open_store("nosuch://x")
    # An unknown scheme is a configuration mistake as much as a plugin problem.
    with pytest.raises(ConfigError):
        pm.open_store("nosuch://x")


def test_roles_are_separate() -> None:
    pm = isolated(("q", _Plugin("only", store=False)))
    pm.open_queue("only://x")
    with pytest.raises(UnknownSchemeError, match="no store backend handles only://"):
        pm.open_store("only://x")


def test_a_url_without_a_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has no scheme"):
        isolated().open_queue("/var/lib/chute.db")


# -- conflicts and broken plugins -------------------------------------------------------------


def test_two_plugins_claiming_one_scheme_are_named() -> None:
    pm = isolated(("chute-alpha", _Plugin("dup")), ("chute-beta", _Plugin("dup")))
    with pytest.raises(DuplicateSchemeError) as caught:
        pm.open_queue("dup://x")
    assert "'dup'" in str(caught.value)
    assert "chute-alpha" in str(caught.value)
    assert "chute-beta" in str(caught.value)


def test_one_plugin_serving_a_scheme_for_both_roles_is_no_conflict() -> None:
    plugin = _Plugin("mem")
    pm = isolated(("mem", plugin))
    assert isinstance(pm.open_queue("mem://"), Queue)
    assert isinstance(pm.open_store("mem://"), Store)
    assert plugin.opened == ["mem://", "mem://"]


def test_a_plugin_whose_hook_fails_raises_plugin_error() -> None:
    class Broken:
        @hookimpl
        def chute_register_backends(self, registry: BackendRegistry) -> None:
            raise RuntimeError("boom")

    pm = isolated(("chute-broken", Broken()))
    with pytest.raises(PluginError, match=r"chute-broken.*boom"):
        pm.open_queue("sqlite:///x.db")


def _install_fake_distribution(site: Path, entry_point: str) -> None:
    """A real (if tiny) installed distribution: importlib.metadata finds it on sys.path."""
    dist_info = site / "chute_broken-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: chute-broken\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[chute]\nbroken = {entry_point}\n")


def test_a_plugin_that_fails_to_import_raises_plugin_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_distribution(tmp_path, "chute_broken_plugin")
    (tmp_path / "chute_broken_plugin.py").write_text("raise ImportError('missing dependency')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = PluginManager()
    with pytest.raises(PluginError) as caught:
        pm.open_queue("sqlite:///x.db")
    message = str(caught.value)
    assert "'broken'" in message
    assert "chute-broken" in message
    assert "missing dependency" in message


# -- laziness ---------------------------------------------------------------------------------


def test_plugins_load_on_first_lookup_not_before() -> None:
    pm = PluginManager()
    assert pm.get_plugin("sqlite") is None
    pm.open_store("sqlite:////tmp/chute-registry-test.db")
    assert pm.get_plugin("sqlite") is not None


def test_importing_chute_loads_no_plugin_module() -> None:
    """Measured in a fresh interpreter: nothing but chute's own core is imported."""
    code = textwrap.dedent(
        """
        import sys
        import chute, chute.registry, chute.backends
        loaded = sorted(
            m for m in sys.modules
            if m.startswith(("chute_", "chute.backends._sqlite", "chute.testing"))
        )
        print(loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def test_registering_a_plugin_later_is_seen_by_the_next_lookup() -> None:
    pm = isolated()
    with pytest.raises(UnknownSchemeError):
        pm.open_queue("late://x")
    pm.register(_Plugin("late"), "late")
    pm.open_queue("late://x")
