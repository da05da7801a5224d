"""What the GCS store does beyond the contract: generation preconditions under races, large
payloads streamed both ways, the lifecycle rule, URLs and unreachable endpoints."""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from gcs_helpers import gs_url

from chute.errors import BackendUnavailable, ConfigError, Conflict, NotFound
from chute.protocol import RequestRecord, Status, new_request_id, now
from chute.registry import open_store
from chute.testing import body_of, free_port, new_record
from chute.testing.gateway import gateway_process
from chute_gcs.retention import chute_rule, merge_rules, retention_days
from chute_gcs.settings import DEFAULT_PREFIX, parse_url
from chute_gcs.store import GcsStore

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


def store(url: str) -> GcsStore:
    opened = open_store(url)
    assert isinstance(opened, GcsStore)
    return opened


# -- compare-and-set -----------------------------------------------------------------------------


async def test_two_writers_race_exactly_one_wins_and_the_record_stays_whole(gcs_url: str) -> None:
    """Two stores read the same generation and race ``write_if`` with different results, many
    times over: exactly one wins each round, the loser gets a clean False, and the record and
    result are the winner's, byte for byte."""

    async def finish(
        name: str, writer: GcsStore, current: RequestRecord, version: object, round_: int
    ) -> bool:
        done = msgspec.structs.replace(
            current, status=Status.COMPLETED, finished_at=now(), extra={"by": name}
        )
        result = json.dumps({"writer": name, "round": round_}).encode()
        return await writer.write_if(done, version, result=result)

    async with store(gcs_url) as a, store(gcs_url) as b:
        for round_ in range(12):
            record = await a.create(new_record("race"), body_of(b"{}"))
            await a.transition("race", record.id, Status.IN_PROGRESS, attempt=1)
            found = await a.read("race", record.id)
            assert found is not None
            current, version = found
            outcomes: dict[str, bool] = {}

            async def run(
                name: str, writer: GcsStore, outcomes: dict[str, bool] = outcomes
            ) -> None:
                outcomes[name] = await finish(name, writer, current, version, round_)  # noqa: B023

            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "a", a)
                tg.start_soon(run, "b", b)
            winners = [name for name, won in outcomes.items() if won]
            assert len(winners) == 1, outcomes
            stored = await a.get("race", record.id)
            assert stored is not None
            assert stored.status is Status.COMPLETED
            assert stored.extra == {"by": winners[0]}
            result = await b.result("race", record.id)
            assert result is not None
            assert json.loads(result) == {"writer": winners[0], "round": round_}


async def test_a_stale_version_is_refused_and_changes_nothing(gcs_url: str) -> None:
    async with store(gcs_url) as s:
        record = await s.create(new_record("cas"), body_of(b"{}"))
        found = await s.read("cas", record.id)
        assert found is not None
        _, version = found
        assert isinstance(version, int)
        assert version > 0
        moved = msgspec.structs.replace(record, extra={"n": 1})
        assert await s.write_if(moved, version) is True
        again = await s.read("cas", record.id)
        assert again is not None
        assert again[1] != version  # the version is the new generation
        assert await s.write_if(msgspec.structs.replace(record, extra={"n": 2}), version) is False
        assert await s.write_if(moved, "not a generation") is False
        assert (await s.get("cas", record.id)) == moved


async def test_a_leftover_result_of_a_lost_writer_is_replaced_by_the_next_attempt(
    gcs_url: str,
) -> None:
    """Attempt 1 placed its result, then lost its compare-and-set (attempt 2 took over): its
    leftover result is never shown, and attempt 2's result replaces it."""
    async with store(gcs_url) as s:
        record = await s.create(new_record("left"), body_of(b"{}"))
        await s.transition("left", record.id, Status.IN_PROGRESS, attempt=1)
        found = await s.read("left", record.id)
        assert found is not None
        assert isinstance(found[1], int)  # the GCS store's version is the object generation
        assert await s._place_result(record, found[1], b'{"attempt": 1}', "t1") is True
        # A rival that read the same generation must not replace it (it may still win) ...
        assert await s._place_result(record, found[1], b'{"rival": 1}', "t2") is False
        await s.transition("left", record.id, Status.IN_PROGRESS, attempt=2)
        assert await s.result("left", record.id) is None  # not completed: nothing shown
        # ... and a writer whose generation is stale cannot either.
        assert await s._place_result(record, found[1], b'{"stale": 1}', "t3") is False
        await s.transition("left", record.id, Status.COMPLETED, attempt=2, result=b'{"a": 2}')
        assert await s.result("left", record.id) == b'{"a": 2}'


async def test_simple_media_uploads_would_not_be_safe(endpoint: str, bucket: str) -> None:
    """Why every compare-and-set is a multipart upload: the emulator enforces
    ``ifGenerationMatch`` on multipart uploads but ignores it on simple media uploads."""
    name = f"probe/{new_request_id()}"
    base = f"{endpoint}/upload/storage/v1/b/{bucket}/o"
    async with httpx.AsyncClient() as http:
        params = {"uploadType": "media", "name": name, "ifGenerationMatch": "0"}
        first = await http.post(base, params=params, content=b"1")
        second = await http.post(base, params=params, content=b"2")
    assert (first.status_code, second.status_code) == (200, 200)  # the precondition was ignored
    async with store(gs_url(bucket, "probe", endpoint)) as s:
        client = s._client
        with pytest.raises(Exception, match="precondition"):
            await client.insert(
                name,
                b"3",
                if_generation_match=0,
                metadata={},
                content_type="text/plain",
                doing="probing",
            )


# -- payloads -----------------------------------------------------------------------------------


async def _generated(size: int, piece: int, digest: Any) -> AsyncIterator[bytes]:
    """``size`` pseudo-random bytes in pieces, never held whole (like a client's upload)."""
    rng = random.Random(size)
    left = size
    while left:
        chunk = rng.randbytes(min(piece, left))
        digest.update(chunk)
        left -= len(chunk)
        yield chunk


async def test_50_mib_payload_goes_up_resumably_and_streams_back(
    bucket: str, endpoint: str
) -> None:
    """A 50 MiB body goes up in 1 MiB resumable chunks and comes back in pieces, and neither
    direction ever holds it whole (traced peak far below 50 MiB)."""
    size = 50 * MiB
    url = gs_url(bucket, "big", endpoint, chunk_size=str(MiB))
    sent = hashlib.sha256()
    received = hashlib.sha256()
    largest = chunks = 0
    async with store(url) as s:
        tracemalloc.start()
        try:
            record = await s.create(new_record("big"), _generated(size, 64 * 1024, sent))
            async for chunk in s.payload("big", record.id):
                received.update(chunk)
                largest = max(largest, len(chunk))
                chunks += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        info = await s._client.info(s._name("big", record.id, "payload"), doing="test")
    assert record.payload_size == size
    assert info is not None
    assert int(info["size"]) == size
    assert received.digest() == sent.digest()
    assert chunks > 1
    assert largest <= MiB
    assert peak < 16 * MiB, f"traced peak {peak / MiB:.1f} MiB: the payload was held whole"


async def test_expired_requests_have_no_payload(gcs_url: str) -> None:
    async with store(gcs_url) as s:
        record = await s.create(new_record("exp", retention=0.3), body_of(b"[1]"))
        assert b"".join([c async for c in s.payload("exp", record.id)]) == b"[1]"
        await anyio.sleep(0.5)
        with pytest.raises(NotFound):
            await anext(s.payload("exp", record.id))


async def test_a_large_create_of_a_known_id_conflicts_before_uploading(gcs_url: str) -> None:
    async with store(f"{gcs_url}&chunk_size={256 * 1024}") as s:
        record = await s.create(new_record("dup"), body_of(b"first"))
        with pytest.raises(Conflict):
            await s.create(record, body_of(b"x" * MiB))
        assert b"".join([c async for c in s.payload("dup", record.id)]) == b"first"


# -- retention ----------------------------------------------------------------------------------


def test_the_lifecycle_rule_merges_with_the_buckets_rules() -> None:
    foreign = {"action": {"type": "SetStorageClass"}, "condition": {"age": 30}}
    other_prefix = chute_rule("elsewhere", 3)
    rules, changed = merge_rules([foreign, other_prefix], "chute", 7)
    assert changed
    assert rules == [foreign, other_prefix, chute_rule("chute", 7)]
    assert merge_rules(rules, "chute", 7) == (rules, False)  # idempotent
    longer, changed = merge_rules(rules, "chute", 14)
    assert changed
    assert longer == [foreign, other_prefix, chute_rule("chute", 14)]
    assert chute_rule("chute", 7) == {
        "action": {"type": "Delete"},
        "condition": {"age": 7, "matchesPrefix": ["chute/"]},
    }
    assert [retention_days(s) for s in (1.0, 86400.0, 86401.0, 7 * 86400.0)] == [1, 1, 2, 7]


async def test_initialize_installs_the_rule_and_creates_a_missing_bucket(endpoint: str) -> None:
    """``initialize`` needs ``?project=`` to create a missing bucket, then sends the rule (the
    emulator accepts it but does not keep lifecycle configuration, so what the rule holds is
    checked by the merge test above)."""
    name = f"chute-init-{new_request_id()[:8].lower()}"
    async with store(gs_url(name, "apps", endpoint)) as s:
        with pytest.raises(ConfigError, match="project"):
            await s.initialize()
    async with store(gs_url(name, "apps", endpoint, project="demo")) as s:
        lines = await s.initialize(retention=3 * 86400.0)
        await s.ping()
    assert lines[0] == f"gs://{name}: created in project demo"
    assert "delete objects under apps/ 3 days after they are written" in lines[1]


def test_chute_storage_init_uses_it(endpoint: str, bucket: str) -> None:
    import subprocess
    import sys

    url = gs_url(bucket, "cli", endpoint)
    done = subprocess.run(
        [sys.executable, "-m", "chute", "storage", "init", "--store", url, "--retention", "2d"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"gs://{bucket}: lifecycle rule" in done.stdout
    assert "cli/ 2 days" in done.stdout


# -- URLs ---------------------------------------------------------------------------------------


def test_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    plain = parse_url("gs://my-bucket")
    assert (plain.bucket, plain.prefix, plain.emulator) == ("my-bucket", DEFAULT_PREFIX, False)
    assert plain.endpoint == "https://storage.googleapis.com"
    full = parse_url(
        "gs://b.example/team/chute?project=p1&timeout=5&retries=2&chunk_size=524288"
        "&max_payload_size=100&endpoint_url=http://127.0.0.1:9/"
    )
    assert (full.prefix, full.project, full.timeout, full.retries) == ("team/chute", "p1", 5.0, 2)
    assert (full.chunk_size, full.max_payload_size) == (524288, 100)
    assert (full.endpoint, full.emulator) == ("http://127.0.0.1:9", True)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:4443")
    assert parse_url("gs://bucket/x").endpoint == "http://localhost:4443"
    for bad, message in [
        ("s3://bucket/x", "not a GCS URL"),
        ("gs://B/x", "bucket name"),
        ("gs://bucket/../x", "prefix segment"),
        ("gs://bucket/x?chunk_size=1000", "multiple of 262144"),
        ("gs://bucket/x?timeout=0", "positive"),
        ("gs://bucket/x?endpoint_url=ftp://h", "http"),
        ("gs://bucket/x?region=eu", "unknown parameter .region.; known parameters: project"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_url(bad)


async def test_storage_emulator_host_is_honoured(
    monkeypatch: pytest.MonkeyPatch, bucket: str, endpoint: str
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint.removeprefix("http://"))
    async with open_store(f"gs://{bucket}/env") as s:
        record = await s.create(new_record("env"), body_of(b"{}"))
        assert await s.get("env", record.id) == record


async def test_bad_api_names_never_reach_an_object_name(gcs_url: str) -> None:
    async with store(gcs_url) as s:
        with pytest.raises(ConfigError, match="API name"):
            await s.get("../other", new_request_id())


# -- outages ------------------------------------------------------------------------------------


async def test_an_unreachable_endpoint_is_unavailable_after_bounded_retries() -> None:
    url = f"gs://nowhere/x?endpoint_url=http://127.0.0.1:{free_port()}&retries=3&timeout=2"
    record = new_record("down")
    async with store(url) as s:
        started = anyio.current_time()
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1.*reading request") as err:
            await s.get("down", record.id)
        # 3 retries back off at least 0.05 + 0.1 + 0.2 s before giving up
        assert anyio.current_time() - started >= 0.35
        assert "nowhere" in str(err.value)
        for operation in (
            lambda: s.create(record, body_of(b"{}")),
            lambda: anext(s.payload("down", record.id)),
            lambda: s.result("down", record.id),
            lambda: s.delete("down", record.id),
            lambda: s.initialize(),
            s.ping,
        ):
            with pytest.raises(BackendUnavailable):
                await operation()


def test_the_gateway_answers_503_when_gcs_is_unreachable(tmp_path: Path) -> None:
    api_file = Path(__file__).parents[3] / "examples" / "hello-world" / "api.yaml"
    store_url = f"gs://nowhere/x?endpoint_url=http://127.0.0.1:{free_port()}&retries=1"
    queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    with gateway_process(api_file, queue_url=queue_url, store_url=store_url) as gateway:
        with httpx.Client(timeout=30) as http:
            for method, path in [
                ("POST", "/hello-world"),
                ("GET", f"/hello-world/{new_request_id()}"),
            ]:
                response = http.request(method, f"{gateway.url}{path}", content=b"{}")
                assert response.status_code == 503, response.text
                assert "127.0.0.1" in response.json()["error"]["message"]
        assert gateway.process.poll() is None  # still serving
