"""Docs are part of the feature: every hook a plugin can implement is documented for plugin
authors, and the README's quick start is the one CI runs (datasette keeps the same checks)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import chute.hookspecs
import chute_k8s.hookspecs
from chute.backends.base import Joint, Queue, Store

ROOT = Path(__file__).resolve().parents[3]


def _documented_hooks() -> dict[str, list[str]]:
    """Each ``### `chute_x(a, b)``` heading of docs/plugins.md: the hook and its arguments."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    found = re.findall(r"^### `(chute_\w+)\(([^)]*)\)`", text, re.M)
    return {name: [a.strip() for a in args.split(",") if a.strip()] for name, args in found}


def _hookspecs(module: ModuleType) -> dict[str, inspect.Signature]:
    marker = f"{chute.hookspecs.PROJECT_NAME}_spec"
    return {
        name: inspect.signature(function)
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if hasattr(function, marker)
    }


def test_every_hook_is_documented_with_its_signature() -> None:
    """Each hook of core and of chute-k8s has its heading in docs/plugins.md with exactly the
    arguments of its specification, and the doc names no hook that does not exist (datasette
    checks its plugin hooks the same way)."""
    documented = _documented_hooks()
    specs = _hookspecs(chute.hookspecs) | _hookspecs(chute_k8s.hookspecs)
    assert set(_hookspecs(chute.hookspecs)) >= {"chute_register_backends", "chute_add_commands"}
    assert "chute_keda_trigger" not in _hookspecs(chute.hookspecs), "a Kubernetes hook in core"
    assert sorted(documented) == sorted(specs), "docs/plugins.md's hook headings"
    for name, signature in specs.items():
        assert documented[name] == list(signature.parameters), name


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def test_the_first_party_capability_table_is_what_the_backends_declare() -> None:
    from chute.backends._sqlite.joint import SqliteJoint
    from chute.backends._sqlite.queue import SqliteQueue
    from chute.backends._sqlite.store import SqliteStore
    from chute_gcs.pubsub import PubSubQueue
    from chute_gcs.store import GcsStore
    from chute_redis.joint import RedisJoint
    from chute_redis.queue import RedisQueue
    from chute_redis.store import RedisStore
    from chute_sqs.queue import SqsQueue
    from chute_sqs.store import S3Store

    backends: list[tuple[str, type[Queue], type[Store], type[Joint] | None]] = [
        ("SQLite", SqliteQueue, SqliteStore, SqliteJoint),
        ("Redis", RedisQueue, RedisStore, RedisJoint),
        ("SQS + S3", SqsQueue, S3Store, None),
        ("Pub/Sub + GCS", PubSubQueue, GcsStore, None),
    ]
    text = (ROOT / "docs" / "plugins.md").read_text()
    rows = {
        m[1].split(" (")[0]: [cell.strip() for cell in m[2].split("|")]
        for m in re.finditer(r"^\| ([^|`]+ \(`[a-z]+://`.*?) \| (.*) \|$", text, re.M)
    }
    for label, queue, store, joint in backends:
        batch = f"{queue.max_batch} / {store.max_batch} / {joint.max_batch if joint else '—'}"
        delayed = _yes(queue.depth_counts_delayed_as_queued) if queue.supports_depth else "—"
        assert rows[label] == [
            _yes(queue.supports_dead_letter),
            _yes(queue.supports_depth),
            delayed,
            _yes(store.supports_listing),
            _yes(store.purge_removes_expired),
            batch,
        ], label


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```console\n(.*?)```", readme, re.S)
    assert block is not None, "README.md has no quick-start console block"
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 2, "the quick start is exactly two command lines"
    demo, tests = lines
    assert "chute demo" in demo
    assert tests in (ROOT / ".ci" / "run").read_text(), ".ci/run must run the README's test line"


def _validate_samples() -> list[tuple[str, str, str]]:
    """(YAML, file name, console block) for each ``chute validate FILE`` sample in
    docs/configuration.md: the nearest YAML block before the console block that runs it."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    samples = []
    yaml_text = None
    for block in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        kind, body = block.group(1), block.group(2)
        run = re.match(r"\$ chute validate (\S+)\n", body)
        if kind == "yaml":
            yaml_text = body
        elif kind == "console" and run and yaml_text is not None:
            samples.append((yaml_text, run.group(1), body))
    return samples


def test_the_validate_samples_print_what_chute_validate_prints(tmp_path: Path) -> None:
    samples = _validate_samples()
    assert len(samples) == 2, "docs/configuration.md shows a valid and an invalid file"
    for yaml_text, name, console in samples:
        (tmp_path / name).write_text(yaml_text)
        done = subprocess.run(
            [sys.executable, "-m", "chute", "validate", name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = console.splitlines()[1:]
        if lines[-2:-1] == ["$ echo $?"]:
            assert done.returncode == int(lines[-1])
            lines = lines[:-2]
        assert done.stdout + done.stderr == "".join(f"{line}\n" for line in lines), name
