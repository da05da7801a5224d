"""The dequeuer (and ``chute dead-letter``) read what the queue declares it can do: a queue
without a dead letter, served by a real plugin installed on the test's own path."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from dequeuer_harness import API, Backend, Container, Dequeuer, write_api_file

from chute.protocol import Status
from chute.registry import open_queue

pytestmark = pytest.mark.anyio

#: A plugin serving ``nodl:///path``: the SQLite queue at ``path``, declaring no dead letter
#: (its dead-letter methods are the base class's, which raise Unsupported).
PLUGIN = """
from chute import hookimpl
from chute.backends.base import Queue
from chute.backends._sqlite.queue import SqliteQueue


class NoDeadLetterQueue(SqliteQueue):
    supports_dead_letter = False
    dead_letter = Queue.dead_letter
    list_dead = Queue.list_dead
    requeue_dead = Queue.requeue_dead
    purge_dead = Queue.purge_dead


@hookimpl
def chute_register_backends(registry):
    registry.add_queue("nodl", lambda url: NoDeadLetterQueue(url.replace("nodl:", "sqlite:", 1)))
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin installed as distribution ``chute-nodl`` (entry point ``nodl``), found by
    the dequeuer's and the CLI's processes through ``PYTHONPATH``."""
    site = tmp_path / "site"
    dist_info = site / "chute_nodl-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: chute-nodl\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[chute]\nnodl = chute_nodl_plugin\n")
    (site / "chute_nodl_plugin.py").write_text(textwrap.dedent(PLUGIN))
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{path}" if path else str(site))
    return site


@pytest.fixture
def dequeuers() -> Iterator[list[Dequeuer]]:
    running: list[Dequeuer] = []
    yield running
    for d in running:
        d.stop()


async def test_retries_exhausted_without_a_dead_letter_fail_and_ack(
    site: Path,
    tmp_path: Path,
    db_url: str,
    container: Container,
    backend: Backend,
    dequeuers: list[Dequeuer],
) -> None:
    """The queue declares no dead letter: the last failed attempt fails the request (not
    marked dead-lettered, since nothing could requeue it), acks its message so it never comes
    back, and says so; the queue's dead-letter methods are never called (they would raise)."""
    queue_url = db_url.replace("sqlite:", "nodl:", 1)
    retries = "  retries:\n    max_attempts: 2\n    initial_backoff: 100ms\n    jitter: false\n"
    api_file = write_api_file(tmp_path / "api.yaml", container.port, extra=retries)
    args = ["--api-file", str(api_file), "--api", API, "--queue", queue_url, "--store", db_url]
    dequeuer = Dequeuer([*args, "--admin-port", "0", "--admin-host", "127.0.0.1"])
    dequeuers.append(dequeuer)
    dequeuer.started()

    rid = await backend.submit(headers=[("X-Behaviour", "status:503")])
    record = await backend.wait_status(rid, Status.FAILED)
    assert record.attempt == 2
    assert record.error is not None
    assert record.error.status_code == 503
    assert "dead_lettered" not in record.extra
    dequeuer.wait_log(
        "retries exhausted and the queue has no dead letter: failed and acked", request_id=rid
    )
    dequeuer.wait_log("request failed", request_id=rid)
    assert len(container.calls(rid)) == 2
    async with open_queue(db_url) as plain:  # the same file, through the ordinary SQLite queue
        depth = await plain.depth(API)
        assert (depth.queued, depth.in_flight, depth.dead) == (0, 0, 0)
        assert await plain.list_dead(API) == []

    # The operator asking for the dead letter is told why there is none.
    done = await anyio.run_process(
        [sys.executable, "-m", "chute", "dead-letter", "list", API, "--queue", queue_url],
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.decode().startswith(
        f"chute dead-letter: the queue {queue_url} has no dead letter (NoDeadLetterQueue "
        "declares supports_dead_letter = False): a request that runs out of attempts is failed"
    )
