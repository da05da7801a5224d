"""The hello-world example end to end on SQS + S3 (moto's server, or LocalStack): ``chute
storage init`` prepares the bucket, ``chute dev --queue sqs://… --store s3://…`` carries
ordinary requests and a 50 MiB payload, and a dequeuer SIGKILLed mid-request loses nothing."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from e2e_support import (
    API,
    EXAMPLE,
    PATIENCE,
    PY,
    Processes,
    eventually,
    fifty_mib_and_twenty_small,
    sigkilled_dequeuer,
    start_chute_dev,
    write_api_file,
)

import chute
from chute.backends.base import QueueDepth
from chute.testing import free_port, http
from chute.testing.services import FoundService, unavailable

MiB = 1024 * 1024
#: moto accepts any credentials, but clients need some; never real ones in tests.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

#: On one xdist worker (--dist=loadgroup): one bucket, made by `chute storage init`.
pytestmark = pytest.mark.xdist_group("test_e2e_sqs")


@pytest.fixture(scope="module")
def aws(moto_service: FoundService) -> Iterator[str]:
    """The endpoint, with test credentials in this process's environment (and so in every
    process the tests start)."""
    try:
        import chute_sqs  # noqa: F401
    except ImportError:
        unavailable("the SQS backend (chute-sqs) is not installed")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_TEST_ENV.items():
            patch.setenv(name, value)
        yield moto_service.url


@pytest.fixture(scope="module")
def store_url(aws: str) -> str:
    """A bucket of this module's own, created and given its lifecycle rule by
    ``chute storage init``, as the user would."""
    url = f"s3://chute-e2e-{uuid.uuid4().hex[:10]}/e2e?endpoint_url={aws}"
    init = subprocess.run(
        [PY, "-m", "chute", "storage", "init", "--store", url],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
    )
    assert init.returncode == 0, init.stderr
    assert "created the bucket" in init.stdout
    assert "expire after 7 d" in init.stdout
    return url


@pytest.fixture
def queue_url(aws: str) -> str:
    return f"sqs://e2e-{uuid.uuid4().hex[:10]}?endpoint_url={aws}"


def test_chute_dev_on_sqs_and_s3_with_a_50_mib_payload(
    processes: Processes, tmp_path: Path, queue_url: str, store_url: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    dev = start_chute_dev(processes, EXAMPLE, state, "--queue", queue_url, "--store", store_url)
    dev.wait_ready()
    assert fifty_mib_and_twenty_small(dev.url) == 21


def test_a_sigkilled_dequeuers_requests_complete_exactly_once(
    processes: Processes, tmp_path: Path, queue_url: str, store_url: str
) -> None:
    """The dequeuer dies mid-request; its SQS visibility timeouts (2 s leases) lapse and a
    new dequeuer completes every request, each once in the store, with its latest call's
    result."""
    payloads = sigkilled_dequeuer(processes, tmp_path, queue_url, store_url)

    async def check_backends() -> None:
        async with chute.open_store(store_url) as store, chute.open_queue(queue_url) as queue:
            records = [await store.get(API, i) for i in payloads]
            assert all(r is not None and r.status is chute.Status.COMPLETED for r in records)
            # Every message acked: nothing waits, runs or died (moto's counts are exact).
            assert await queue.depth(API) == QueueDepth(queued=0, in_flight=0, dead=0)

    anyio.run(check_backends)


def _status(url: str) -> int:
    try:
        return http().get(url, timeout=PATIENCE).status_code
    except httpx.TransportError:
        return 0


def test_an_unreachable_store_is_503_not_a_crash(processes: Processes, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    api_file = write_api_file(tmp_path / "api.yaml", free_port())
    argv = [PY, "-m", "chute", "gateway", str(api_file), "--port", str(port)]
    argv += [
        "--queue",
        f"sqs://e2e?endpoint_url={dead}",
        "--store",
        f"s3://nowhere/x?endpoint_url={dead}",
    ]
    gateway = processes.start("gateway", argv, env=AWS_TEST_ENV)
    eventually(lambda: _status(f"http://127.0.0.1:{port}/healthz") == 503, "/healthz to be 503")
    response = http().post(f"http://127.0.0.1:{port}/{API}", json={"text": "hi"}, timeout=PATIENCE)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"]
    missing = http().get(f"http://127.0.0.1:{port}/{API}/{secrets.token_hex(12)}", timeout=PATIENCE)
    assert missing.status_code == 503, missing.text
    assert gateway.running()
