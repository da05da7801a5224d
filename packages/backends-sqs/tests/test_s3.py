"""S3-specific behaviour of the store: multipart payloads, the conditional-write race, the
object layout, the lifecycle rule installed by ``chute storage init``, expiry on read."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest

from chute.errors import Conflict, NotFound, PayloadTooLarge
from chute.protocol import Status, now
from chute.registry import open_store
from chute.testing import body_of, new_record
from chute_sqs.store import PART_SIZE, S3Store

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


def _prefix(url: str) -> str:
    return url.split("/", 3)[3].split("?", 1)[0]


async def test_50_mib_payload_goes_multipart_and_streams_back(
    s3_url: str, s3_client: Any, bucket: str
) -> None:
    data = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(50 * MiB // 32))
    assert len(data) == 50 * MiB
    async with open_store(s3_url) as store:
        record = await store.create(new_record("big"), body_of(data, piece=256 * 1024))
        assert record.payload_size == len(data)
        digest = hashlib.sha256()
        chunks = 0
        async for chunk in store.payload("big", record.id):
            digest.update(chunk)
            chunks += 1
    assert digest.digest() == hashlib.sha256(data).digest()
    assert chunks > 1
    head = s3_client.head_object(Bucket=bucket, Key=f"{_prefix(s3_url)}/big/{record.id}/payload")
    # A multipart object's ETag ends in -<parts>: 50 MiB in 8 MiB parts is 7 parts.
    assert head["ETag"].strip('"').endswith(f"-{math.ceil(len(data) / PART_SIZE)}")
    assert head["ContentLength"] == len(data)


async def test_a_broken_multipart_upload_is_aborted(
    s3_url: str, s3_client: Any, bucket: str
) -> None:
    class Gone(Exception):
        pass

    async def broken() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * MiB
        raise Gone

    record = new_record("broken")
    async with open_store(s3_url) as store:
        with pytest.raises(Gone):
            await store.create(record, broken())
        assert await store.get("broken", record.id) is None
    uploads = s3_client.list_multipart_uploads(Bucket=bucket, Prefix=_prefix(s3_url))
    assert uploads.get("Uploads", []) == []
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=_prefix(s3_url))
    assert listed.get("Contents", []) == []


async def test_objects_of_a_request(s3_url: str, s3_client: Any, bucket: str) -> None:
    async with open_store(s3_url) as store:
        record = await store.create(new_record("layout"), body_of(b'{"x": 1}'))
        await store.transition("layout", record.id, Status.IN_PROGRESS, attempt=1)
        await store.transition(
            "layout", record.id, Status.COMPLETED, attempt=1, result=b'{"ok": true}'
        )
    base = f"{_prefix(s3_url)}/layout/{record.id}/"
    keys = sorted(
        item["Key"][len(base) :]
        for item in s3_client.list_objects_v2(Bucket=bucket, Prefix=base)["Contents"]
    )
    assert keys[:1] == ["payload"]
    assert keys[1] == "record.json"
    assert len(keys) == 3
    assert keys[2].startswith("result-")
    assert keys[2].endswith(".json")
    stored = msgspec.json.decode(
        s3_client.get_object(Bucket=bucket, Key=base + "record.json")["Body"].read()
    )
    assert stored["record"]["status"] == "completed"
    assert stored["record"]["headers"] == [["x-trace", "abc"], ["accept", "*/*"]]
    assert stored["result"] == keys[2]
    assert stored["revision"] == 3


async def test_two_racing_writers_one_wins_the_other_gets_a_clean_no(
    s3_url: str, s3_client: Any, bucket: str
) -> None:
    """Both read the same version; both try to complete with their own result. One write_if
    succeeds; the other returns False, and its result object is gone again."""
    async with open_store(s3_url) as a, open_store(s3_url) as b:
        record = await a.create(new_record("race"), body_of(b"{}"))
        found_a, found_b = await a.read("race", record.id), await b.read("race", record.id)
        assert found_a is not None
        assert found_b is not None
        done = msgspec.structs.replace(record, status=Status.COMPLETED, attempt=1)
        outcomes: dict[str, bool] = {}

        async def write(name: str, store: Any, version: object) -> None:
            outcomes[name] = await store.write_if(done, version, result=name.encode())

        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "a", a, found_a[1])
            tg.start_soon(write, "b", b, found_b[1])
        assert sorted(outcomes.values()) == [False, True]
        winner = next(name for name, won in outcomes.items() if won)
        assert await a.result("race", record.id) == winner.encode()
        # The stale version is refused from now on, whoever holds it.
        assert await b.write_if(done, found_b[1]) is False
    base = f"{_prefix(s3_url)}/race/{record.id}/"
    results = [
        item["Key"]
        for item in s3_client.list_objects_v2(Bucket=bucket, Prefix=base)["Contents"]
        if "/result-" in item["Key"]
    ]
    assert len(results) == 1, "the loser's result object was left behind"


async def test_create_conflict_is_a_clean_conflict(s3_url: str) -> None:
    async with open_store(s3_url) as store:
        record = await store.create(new_record("dup"), body_of(b"one"))
        big = b"z" * (PART_SIZE + MiB)  # multipart this time: the precondition is on complete
        with pytest.raises(Conflict):
            await store.create(record, body_of(big))
        assert b"".join([c async for c in store.payload("dup", record.id)]) == b"one"


async def test_expired_request_has_no_payload_or_result(s3_url: str) -> None:
    async with open_store(s3_url) as store:
        # Long enough that a loaded machine finishes the moves before it lapses.
        record = await store.create(new_record("old", retention=3.0), body_of(b"{}"))
        await store.transition("old", record.id, Status.IN_PROGRESS, attempt=1)
        await store.transition("old", record.id, Status.COMPLETED, attempt=1, result=b"1")
        assert await store.result("old", record.id) == b"1"
        await anyio.sleep(max(0.0, record.expires_at - now()) + 0.2)
        assert await store.result("old", record.id) is None
        with pytest.raises(NotFound):
            async for _ in store.payload("old", record.id):
                pass
        assert await store.get("old", record.id) is None


def _chute(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chute", *args], capture_output=True, text=True, timeout=120
    )


def test_chute_storage_init_creates_the_bucket_and_installs_the_lifecycle_rule(
    endpoint: str, s3_client: Any
) -> None:
    bucket = f"chute-init-{uuid.uuid4().hex[:8]}"
    url = f"s3://{bucket}/results?endpoint_url={endpoint}&region=us-east-1"
    # Another tool's rule on the bucket must survive chute's.
    first = _chute("storage", "init", "--store", url, "--retention", "36h")
    assert first.returncode == 0, first.stderr
    assert "created the bucket" in first.stdout
    assert "installed (expire after 2 d)" in first.stdout
    rules = s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    [rule] = rules
    assert rule["ID"] == "chute-expire-results"
    assert rule["Filter"] == {"Prefix": "results/"}
    assert rule["Expiration"] == {"Days": 2}
    assert rule["Status"] == "Enabled"
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    other = {"ID": "theirs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled"}
    other["Expiration"] = {"Days": 30}
    s3_client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*rules, other]}
    )
    again = _chute("storage", "init", "--store", url, "--retention", "36h")
    assert again.returncode == 0, again.stderr
    assert "in place" in again.stdout
    assert "created" not in again.stdout
    longer = _chute("storage", "init", "--store", url, "--retention", "10d")
    assert longer.returncode == 0, longer.stderr
    rules = {
        r["ID"]: r for r in s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    }
    assert rules["chute-expire-results"]["Expiration"] == {"Days": 10}
    assert rules["theirs"]["Expiration"] == {"Days": 30}
    s3_client.delete_bucket(Bucket=bucket)


async def test_store_objects_share_one_client_per_loop(s3_url: str) -> None:
    async with open_store(s3_url) as a, open_store(s3_url) as b:
        assert isinstance(a, S3Store)
        assert isinstance(b, S3Store)
        assert await a._clients.get() is await b._clients.get()


async def test_max_payload_size_from_the_url(s3_url: str, s3_client: Any, bucket: str) -> None:
    """Above the URL's limit, create raises PayloadTooLarge, even mid-multipart, and leaves
    no object and no unfinished upload; the id stays free."""
    limit = PART_SIZE + MiB
    async with open_store(f"{s3_url}&max_payload_size={limit}") as store:
        assert store.max_payload_size == limit
        record = new_record("limit")
        with pytest.raises(PayloadTooLarge):
            await store.create(record, body_of(b"x" * (limit + 1)))
        assert await store.get("limit", record.id) is None
        assert (await store.create(record, body_of(b"{}"))).payload_size == 2
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
