"""Docs that run (issue 15, item 11): every Python code block in docs/ is executed.

A block runs as written: top-level ``await`` is allowed (the block becomes a coroutine that
anyio runs), and ``chute`` is imported, as the docs assume. Blocks that talk to a gateway get a
real one: ``chute dev`` with the hello-world example serving the two API names the docs use
(``hello-world`` and ``classifier``), found through ``$CHUTE_GATEWAY_URL`` as a user's would be.
A fragment (a piece of a plugin's method) runs in a namespace that gives it the names around it
— real objects where there are real ones — and its effect is checked. A block that has no entry
in ``CONTEXTS`` still runs, with ``chute`` only: a new example that cannot run fails here.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from e2e_support import EXAMPLE, ROOT, ChuteDev, Processes, start_chute_dev

import chute
from chute.testing import free_port

DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

#: On one xdist worker (--dist=loadgroup): one chute dev for the blocks that need a gateway.
pytestmark = pytest.mark.xdist_group("test_docs_code")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    source: str

    @property
    def key(self) -> tuple[str, str]:
        """The doc and the block's first line: how CONTEXTS names a block."""
        return self.doc, self.source.strip().splitlines()[0]

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def python_blocks() -> list[Block]:
    blocks = []
    for doc in DOCS:
        text = doc.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            blocks.append(Block(doc.name, line, match[1]))
    return blocks


def compiled(block: Block) -> Any:
    """The block's code; evaluating it gives a coroutine when the block awaits."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return compile(block.source, str(block), "exec", flags=flags, dont_inherit=True)


def execute(block: Block, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run ``block`` in ``namespace`` (top-level await allowed); return the namespace."""
    namespace.setdefault("chute", chute)
    namespace.setdefault("__name__", f"docs_{block.doc.removesuffix('.md')}")
    result = eval(compiled(block), namespace)  # a coroutine when the block awaits
    if inspect.iscoroutine(result):

        async def main() -> None:
            await result

        anyio.run(main)
    return namespace


# -- the gateway the client examples talk to ---------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``chute dev`` of the hello-world app under the names the docs use; its URL."""
    folder = tmp_path_factory.mktemp("docs-gateway")
    shutil.copy(EXAMPLE.parent / "app.py", folder / "app.py")
    text = EXAMPLE.read_text()
    first = text.index("- name: hello-world")
    api = text[first:]
    (folder / "api.yaml").write_text(api + api.replace("- name: hello-world", "- name: classifier"))
    processes = Processes(folder)
    try:
        dev: ChuteDev = start_chute_dev(
            processes, folder / "api.yaml", folder / ".chute", port=free_port()
        )
        dev.wait_ready()
        yield dev.url
    except BaseException:
        print(processes.logs())
        raise
    finally:
        processes.stop_all()


@pytest.fixture
def at_gateway(gateway: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment of a container under chute dev: ``$CHUTE_GATEWAY_URL``."""
    monkeypatch.setenv("CHUTE_GATEWAY_URL", gateway)
    monkeypatch.delenv("CHUTE_API_KEY", raising=False)
    return gateway


# -- each block's context and check ------------------------------------------------------------

Context = Callable[[Block, pytest.FixtureRequest], None]
CONTEXTS: dict[tuple[str, str], Context] = {}


def context(doc: str, first_line: str) -> Callable[[Context], Context]:
    def register(fn: Context) -> Context:
        CONTEXTS[doc, first_line] = fn
        return fn

    return register


@context("client.md", "import chute")
def _client_sync(block: Block, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("at_gateway")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace = execute(block, {})
    assert namespace["result"].status == "completed"
    printed = ast.literal_eval(out.getvalue().strip())
    # The sample output under the block is what hello-world answers: the same keys and values,
    # except the ones that differ on each run.
    text = (ROOT / "docs" / "client.md").read_text()
    sample = re.search(r"<!-- client-output -->\n```text\n(.*?)\n```", text, re.S)
    assert sample is not None, "docs/client.md lost its sample output"
    documented = ast.literal_eval(sample[1])
    assert list(printed) == list(documented)
    varying = {"request_id", "hostname", "pid", "call"}
    assert {k: v for k, v in printed.items() if k not in varying} == {
        k: v for k, v in documented.items() if k not in varying
    }


@context("client.md", "async with chute.AsyncClient() as client:")
def _client_async(block: Block, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("at_gateway")
    namespace = execute(block, {})
    assert namespace["result"].status == "completed"
    assert namespace["result"].result["message"] == "hello, hi!"


@context("auth.md", 'chute.Client(api_key="k_3f9a61c2d7e4")  # or $CHUTE_API_KEY')
def _auth_client(block: Block, request: pytest.FixtureRequest) -> None:
    client = eval(compile(block.source.strip(), str(block), "eval"), {"chute": chute})
    with client:
        assert client._headers["Authorization"] == "Bearer k_3f9a61c2d7e4"


@context("idempotency.md", "with chute.Client() as client:")
def _idempotency(block: Block, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("at_gateway")
    first = execute(block, {})["request_id"]
    assert execute(block, {})["request_id"] == first  # the same key: the same request


@context("long-poll.md", "with chute.Client() as client:")
def _long_poll(block: Block, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("at_gateway")
    result = execute(block, {})["result"]
    assert result.status == "completed"
    assert result.result["echo"] == {"image": "cat.jpg"}


@context("gateway.md", "from chute.config import load_apis")
def _gateway_from_python(block: Block, request: pytest.FixtureRequest) -> None:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    shutil.copy(EXAMPLE, tmp_path / "api.yaml")
    monkeypatch.chdir(tmp_path)
    urls: list[str] = []
    answered: list[int] = []
    listening = anyio.Event()

    def on_listening(url: str) -> None:
        urls.append(url)
        listening.set()

    async def main() -> None:
        async def check_then_stop() -> None:
            await listening.wait()  # the block's print(url): the gateway listens
            async with httpx.AsyncClient(timeout=30) as client:
                answered.append((await client.get(f"{urls[0]}/healthz")).status_code)
            # serve() stops on SIGTERM, as documented; its handler is in place once it listens.
            os.kill(os.getpid(), signal.SIGTERM)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(check_then_stop)
                namespace = {"print": on_listening, "chute": chute}
                await eval(compiled(block), namespace)

    anyio.run(main)
    assert answered == [200]


@context("kubernetes.md", "from chute import hookimpl")
def _k8s_hook(block: Block, request: pytest.FixtureRequest) -> None:
    namespace = execute(block, {})
    hook = namespace["chute_k8s_objects"]
    cluster = SimpleNamespace(namespace="team-a")
    shared: list[dict[str, Any]] = []
    hook(objects=shared, api=None, cluster=cluster)
    assert shared[0]["kind"] == "ServiceAccount"
    deployment: dict[str, Any] = {"kind": "Deployment", "spec": {"template": {"spec": {}}}}
    hook(objects=[deployment], api=object(), cluster=cluster)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "chute-apis"


@context("plugins.md", "@hookspec")
def _hookspec(block: Block, request: pytest.FixtureRequest) -> None:
    import chute.hookspecs
    from chute.registry import BackendRegistry

    namespace = execute(block, {"hookspec": chute.hookspecs.hookspec, "BackendRegistry": Any})
    documented = inspect.signature(namespace["chute_register_backends"])
    real = inspect.signature(chute.hookspecs.chute_register_backends)
    assert list(documented.parameters) == list(real.parameters)
    assert callable(BackendRegistry)  # what the parameter is


@context("plugins.md", "@hookimpl")
def _add_commands(block: Block, request: pytest.FixtureRequest) -> None:
    import argparse

    from chute.cli import CommandRegistrar
    from chute.hookspecs import hookimpl

    names = {"hookimpl": hookimpl, "CommandRegistrar": CommandRegistrar, "argparse": argparse}
    namespace = execute(block, names)
    parser = argparse.ArgumentParser(prog="chute")
    commands = CommandRegistrar(parser)
    namespace["chute_add_commands"](commands)
    assert commands.names == {"kv-compact"}
    args = parser.parse_args(["kv-compact", "kv://127.0.0.1/x"])
    assert (args.command, args.url, callable(args.run)) == ("kv-compact", "kv://127.0.0.1/x", True)


@context("plugins.md", "try:")
def _translate_errors(block: Block, request: pytest.FixtureRequest) -> None:
    import redis
    import redis.asyncio

    from chute.errors import BackendUnavailable

    async def main() -> None:
        client = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=5)
        this = SimpleNamespace(_client=client, _where="127.0.0.1")
        namespace = {
            "self": this,
            "key": "k",
            "value": "v",
            "redis": redis,
            "BackendUnavailable": BackendUnavailable,
        }
        try:
            with pytest.raises(BackendUnavailable, match=r"Redis at 127\.0\.0\.1"):
                await eval(compiled(block), namespace)
        finally:
            await client.aclose()

    anyio.run(main)


@context("plugins.md", '"""chute\'s entry point for kv:// (group ``chute``, name ``kv``)."""')
def _entry_point_module(block: Block, request: pytest.FixtureRequest) -> None:
    from chute.registry import BackendRegistry

    namespace = execute(block, {})
    registry = BackendRegistry()
    namespace["chute_register_backends"](registry=registry)
    assert "kv" in registry.queues
    assert "kv" in registry.stores


@context("plugins.md", "import pytest")
def _contract_classes(block: Block, request: pytest.FixtureRequest) -> None:
    from chute.testing import QueueContract, StoreContract

    namespace = execute(block, {})
    assert issubclass(namespace["TestKvQueue"], QueueContract)
    assert issubclass(namespace["TestKvStore"], StoreContract)


@context("plugins.md", "from chute.backends.pool import LoopHandle, LoopShared")
def _pool(block: Block, request: pytest.FixtureRequest) -> None:
    from chute.backends.base import Store

    class KvClient:
        def __init__(self, host: str, port: int) -> None:
            self.closed = False

        async def aclose(self) -> None:
            self.closed = True

    def parse_url(url: str) -> Any:
        return SimpleNamespace(host="127.0.0.1", port=7777)

    namespace = execute(block, {"KvClient": KvClient, "Store": Store, "parse_url": parse_url})
    kv_store = namespace["KvStore"]

    async def main() -> None:
        # The documented methods, on two handles of one endpoint: one client, closed by the last.
        async def unused(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

        concrete = type("Kv", (kv_store,), dict.fromkeys(kv_store.__abstractmethods__, unused))
        first, second = (concrete("kv://127.0.0.1:7777") for _ in range(2))
        client = kv_store._client(first)
        assert kv_store._client(second) is client
        await kv_store.aclose(first)
        assert not client.closed
        await kv_store.aclose(second)
        assert client.closed

    anyio.run(main)


@context(
    "plugins.md", "pieces = limited_pieces(body, limit=self.max_payload_size, piece_size=PART_SIZE)"
)
def _streaming(block: Block, request: pytest.FixtureRequest) -> None:
    from chute.backends.streams import limited_pieces

    async def run(body_size: int) -> list[tuple[str, int]]:
        calls: list[tuple[str, int]] = []

        async def body() -> Any:
            for start in range(0, body_size, 3):
                yield b"x" * min(3, body_size - start)

        async def put_whole(data: bytes) -> None:
            calls.append(("whole", len(data)))

        async def start_upload() -> str:
            calls.append(("start", 0))
            return "upload-1"

        async def send_part(upload: str, data: bytes, *, final_size: int | None) -> None:
            calls.append(("part", len(data) if final_size is None else -final_size))

        namespace = {
            "limited_pieces": limited_pieces,
            "contextlib": contextlib,
            "body": body(),
            "self": SimpleNamespace(max_payload_size=100),
            "PART_SIZE": 8,
            "upload": None,
            "put_whole": put_whole,
            "start_upload": start_upload,
            "send_part": send_part,
        }
        await eval(compiled(block), namespace)
        return calls

    assert anyio.run(run, 5) == [("whole", 5)]
    assert anyio.run(run, 20) == [("start", 0), ("part", 8), ("part", 8), ("part", -20)]


@context("plugins.md", "SCHEMA = {")
def _url_options(block: Block, request: pytest.FixtureRequest) -> None:
    from chute.backends.urls import Option, parse_options, positive_seconds, size

    names = {"Option": Option, "parse_options": parse_options}
    names |= {"positive_seconds": positive_seconds, "size": size}
    namespace = execute(block, {**names, "url": "kv://host/x?timeout=2.5&max_payload_size=16Mi"})
    assert namespace["timeout"] == 2.5
    assert namespace["options"]["max_payload_size"] == 16 * 2**20
    assert execute(block, {**names, "url": "kv://host/x"})["timeout"] == 10.0


@context("plugins.md", "class TestKvQueue(QueueContract):")
def _expected_failure(block: Block, request: pytest.FixtureRequest) -> None:
    from chute.testing import QueueContract

    namespace = execute(block, {"pytest": pytest, "QueueContract": QueueContract})
    method = namespace["TestKvQueue"].test_requeue_named_dead_letters_and_purge
    [mark] = method.pytestmark
    assert mark.name == "xfail"


@context("webhooks.md", "import base64")
def _verify_webhook(block: Block, request: pytest.FixtureRequest) -> None:
    import time

    from chute.webhooks import sign

    verify = execute(block, {})["verify_webhook"]
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    stamp = int(time.time())
    body = b'{"id": "1", "status": "completed"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp)}
    headers["webhook-signature"] = sign(secret, "msg_1", stamp, body)
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")


# -- the test ----------------------------------------------------------------------------------

BLOCKS = python_blocks()


def test_docs_have_python_blocks_and_every_context_still_matches_one() -> None:
    assert len(BLOCKS) >= 15
    keys = {block.key for block in BLOCKS}
    stale = [key for key in CONTEXTS if key not in keys]
    assert not stale, f"contexts for blocks that no longer exist: {stale}"


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_python_block_runs(block: Block, request: pytest.FixtureRequest) -> None:
    run = CONTEXTS.get(block.key)
    if run is None:
        execute(block, {})
    else:
        run(block, request)
