"""The plugin manager's hooks: checked when plugins load, called through typed methods, added
to by plugins; the command registrar; and the switches that keep plugins from loading."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from chute.cli import CommandRegistrar
from chute.errors import PluginError
from chute.hookspecs import hookimpl, hookspec
from chute.registry import BackendRegistry, PluginManager, open_queue

# -- hook implementations are checked -----------------------------------------------------------


class _Misspelt:
    """A plugin whose author wrote the hook's name wrong (singular): pluggy alone would ignore
    it, and its backends would silently never exist."""

    @hookimpl
    def chute_register_backend(self, registry: BackendRegistry) -> None:
        raise AssertionError("never called: the hook does not exist")


def test_a_misspelt_hook_implementation_fails_loudly_at_loading() -> None:
    pm = PluginManager(load_entry_points=False)
    pm.register(_Misspelt(), "chute-typo")
    with pytest.raises(PluginError) as caught:
        pm.open_queue("sqlite:///x.db")
    message = str(caught.value)
    assert "chute plugin 'chute-typo' implements 'chute_register_backend'" in message
    assert "did you mean 'chute_register_backends'?" in message


def test_a_misspelt_hook_registered_after_loading_fails_at_once() -> None:
    pm = PluginManager(load_entry_points=False)
    pm.load()
    with pytest.raises(PluginError, match=r"'late-typo' implements 'chute_register_backend'"):
        pm.register(_Misspelt(), "late-typo")


def test_a_misspelt_argument_is_a_plugin_error_naming_the_plugin() -> None:
    class WrongArgument:
        @hookimpl
        def chute_register_backends(self, registery: BackendRegistry) -> None: ...

    pm = PluginManager(load_entry_points=False)
    with pytest.raises(PluginError, match=r"'bad-arg'.*registery"):
        pm.register(WrongArgument(), "bad-arg")


class _OwnHooks:
    """A plugin declaring a hook of its own, as chute-k8s does."""

    @staticmethod
    @hookspec
    def chute_example_greeting(name: str) -> str:  # type: ignore[empty-body]
        """A greeting for ``name``."""


class _Greeter:
    @hookimpl
    def chute_example_greeting(self, name: str) -> str:
        return f"hello {name}"


class _Declarer:
    @hookimpl
    def chute_add_hookspecs(self, manager: PluginManager) -> None:
        manager.add_hookspecs(_OwnHooks)


class _OptionalGreeter:
    @hookimpl(optionalhook=True)
    def chute_example_greeting(self, name: str) -> str:
        return f"hi {name}"


def test_a_plugin_adds_its_own_hooks_for_other_plugins_to_implement() -> None:
    pm = PluginManager(load_entry_points=False)
    pm.register(_Greeter(), "greeter")  # before the hook exists: checked at loading
    pm.register(_Declarer(), "declarer")
    pm.load()
    assert pm.has_hook("chute_example_greeting")
    assert pm.pm.hook.chute_example_greeting(name="chute") == ["hello chute"]
    pm.add_hookspecs(_OwnHooks)  # adding them again changes nothing


def test_an_implementation_of_an_absent_plugins_hook_is_refused_unless_optional() -> None:
    """Without the plugin that declares the hook, an implementation is an error, unless it is
    marked optionalhook (a queue backend's chute_keda_trigger without chute-k8s)."""
    pm = PluginManager(load_entry_points=False)
    pm.register(_OptionalGreeter(), "optional")
    pm.load()
    assert not pm.has_hook("chute_example_greeting")
    with pytest.raises(PluginError, match=r"'greeter' implements 'chute_example_greeting'"):
        pm.register(_Greeter(), "greeter")


def test_a_blocked_plugin_is_not_registered() -> None:
    pm = PluginManager(load_entry_points=False, environ={"CHUTE_BLOCK_PLUGINS": "typo, other"})
    pm.register(_Misspelt(), "typo")
    pm.load()
    assert pm.get_plugin("typo") is None
    assert pm.blocked == ("typo", "other")


# -- the command registrar ----------------------------------------------------------------------


def _hello(args: argparse.Namespace) -> int:
    print(f"hello {args.who}")
    return 0


def test_the_registrar_adds_commands_and_groups_with_their_handlers() -> None:
    parser = argparse.ArgumentParser(prog="chute")
    commands = CommandRegistrar(parser)
    commands.add("hello", run=_hello, help="say hello").add_argument("who")
    actions = commands.group("queue", help="queue actions")
    actions.add("peek", run=_hello, help="peek").add_argument("who")
    assert commands.names == {"hello", "queue"}
    assert actions.names == {"peek"}
    args = parser.parse_args(["queue", "peek", "you"])
    assert (args.command, args.queue_command, args.who, args.run) == (
        "queue",
        "peek",
        "you",
        _hello,
    )


def test_a_command_added_twice_is_a_plugin_error() -> None:
    commands = CommandRegistrar(argparse.ArgumentParser(prog="chute"))
    commands.add("hello", run=_hello, help="say hello", aliases=("hi",))
    with pytest.raises(PluginError, match=r"command 'hi' is added twice"):
        commands.add("hi", run=_hello, help="again")


def test_plugin_commands_go_through_the_typed_method() -> None:
    class Adds:
        @hookimpl
        def chute_add_commands(self, commands: CommandRegistrar) -> None:
            commands.add("hello", run=_hello, help="say hello").add_argument("who")

    class Breaks:
        @hookimpl
        def chute_add_commands(self, commands: CommandRegistrar) -> None:
            raise RuntimeError("boom")

    pm = PluginManager(load_entry_points=False)
    pm.register(Adds(), "adds")
    commands = CommandRegistrar(argparse.ArgumentParser(prog="chute"))
    pm.add_commands(commands)
    assert commands.names == {"hello"}
    pm.register(Breaks(), "breaks")
    with pytest.raises(PluginError, match=r"chute plugin 'breaks' failed to add its commands"):
        pm.add_commands(CommandRegistrar(argparse.ArgumentParser(prog="chute")))


# -- the switches, through the real command line -------------------------------------------------

PLUGIN = """
from chute import hookimpl


def hello(args):
    print("hello from the plugin")
    return 0


@hookimpl
def chute_add_commands(commands):
    commands.add("hello", run=hello, help="say hello")
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An installed distribution ``chute-hello`` with entry point ``hello`` in group ``chute``,
    on a directory the subprocess finds through ``PYTHONPATH``."""
    dist_info = tmp_path / "chute_hello-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: chute-hello\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[chute]\nhello = chute_hello_plugin\n")
    (tmp_path / "chute_hello_plugin.py").write_text(textwrap.dedent(PLUGIN))
    return tmp_path


def chute(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CHUTE_", "PYTHONPATH"))}
    environ |= {"PYTHONPATH": str(site), **env}
    return subprocess.run(
        [sys.executable, "-m", "chute", *args],
        env=environ,
        cwd=site,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_installed_plugin_adds_its_command(site: Path) -> None:
    done = chute(site, "hello")
    assert (done.returncode, done.stdout, done.stderr) == (0, "hello from the plugin\n", "")


async def _create_queue(url: str) -> None:
    async with open_queue(url) as queue:
        await queue.ping()


def test_auto_loading_off_keeps_entry_points_out_but_not_core(site: Path) -> None:
    done = chute(site, "hello", CHUTE_DISABLE_PLUGIN_AUTOLOAD="1")
    assert done.returncode == 2
    assert "invalid choice: 'hello'" in done.stderr
    # Core's own backend is built in: it still serves sqlite:// (here: an empty dead letter).
    db = site / "chute.db"
    anyio.run(_create_queue, f"sqlite:///{db}")
    done = chute(
        site, "dead-letter", "list", "api", "--queue", f"sqlite:///{db}",
        CHUTE_DISABLE_PLUGIN_AUTOLOAD="1",
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    # An installed first-party plugin is named with the reason it did not load.
    done = chute(
        site, "dead-letter", "list", "api", "--queue", "redis://127.0.0.1:1/0",
        CHUTE_DISABLE_PLUGIN_AUTOLOAD="1",
    )  # fmt: skip
    assert done.returncode == 3
    assert (
        "its plugin 'redis' is installed but not loaded: plugin auto-loading is off "
        "(CHUTE_DISABLE_PLUGIN_AUTOLOAD)" in done.stderr
    )
    assert "install it with" not in done.stderr


def test_auto_loading_off_loads_the_plugins_named(site: Path) -> None:
    done = chute(site, "hello", CHUTE_DISABLE_PLUGIN_AUTOLOAD="1", CHUTE_PLUGINS="hello")
    assert (done.returncode, done.stdout) == (0, "hello from the plugin\n")
    done = chute(site, "hello", CHUTE_DISABLE_PLUGIN_AUTOLOAD="0")
    assert (done.returncode, done.stdout) == (0, "hello from the plugin\n")


def test_blocked_plugins_do_not_load(site: Path) -> None:
    done = chute(site, "hello", CHUTE_BLOCK_PLUGINS="other, hello")
    assert done.returncode == 2
    assert "invalid choice: 'hello'" in done.stderr
    done = chute(site, "render", "api.yaml", CHUTE_BLOCK_PLUGINS="k8s")
    assert done.returncode == 2
    assert done.stderr == (
        "chute: 'render' comes with the plugin 'k8s', installed but not loaded: "
        "blocked by CHUTE_BLOCK_PLUGINS\n"
    )


def test_a_misspelt_hook_of_an_installed_plugin_is_a_warning_and_core_still_works(
    site: Path,
) -> None:
    plugin = site / "chute_hello_plugin.py"
    plugin.write_text(plugin.read_text().replace("def chute_add_commands", "def chute_add_command"))
    done = chute(site, "validate", "--help")
    assert done.returncode == 0
    assert done.stderr.startswith(
        "chute: warning: chute plugin 'hello' implements 'chute_add_command', a hook that "
        "neither chute nor a loaded plugin declares; did you mean 'chute_add_commands'?"
    )


def test_hooks_are_called_only_through_the_typed_methods() -> None:
    """No module outside the plugin managers calls a hook through pluggy (``.pm.hook.``)."""
    root = Path(__file__).resolve().parents[3] / "packages"
    allowed = {root / "core/src/chute/registry.py", root / "k8s/src/chute_k8s/hooks.py"}
    offenders = [
        str(path.relative_to(root))
        for path in sorted(root.glob("*/src/**/*.py"))
        if path not in allowed and ".pm.hook." in path.read_text()
    ]
    assert offenders == []
