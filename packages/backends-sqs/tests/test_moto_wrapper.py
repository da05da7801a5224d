"""chute.testing._moto, the moto server the suites run on: S3's conditional writes and SQS's
receives are atomic there, as on AWS. The server runs with a tiny GIL switch interval, so its
request threads switch between almost any two bytecodes: plain moto_server, run the same
way, lets two writers win some of these S3 races and hands dozens of these SQS messages to
two receivers."""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chute.testing._moto import SWITCH_INTERVAL_ENV
from chute.testing.services import MOTO, local_server

T = TypeVar("T")
#: moto takes any signature, but refuses an unsigned write to an existing key (403).
AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


@pytest.fixture(scope="module")
def wrapped_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The services fixture's moto (chute.testing._moto), threads switching at every chance."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SWITCH_INTERVAL_ENV, "1e-6")
        with local_server(MOTO, tmp_path_factory.mktemp("moto")) as server:
            patch.delenv(SWITCH_INTERVAL_ENV)
            yield server.url


def race_s3(url: str, rounds: int, writers: int) -> Counter[str]:
    """Per round, ``writers`` connections put one object with the same ``If-Match``, then a
    new one with ``If-None-Match: *``; returns how many races had how many winners
    (``"1 won"``...), or a server error (``"500"``: on plain moto, a second winner's write can
    close the first one's object while its reply is made). The requests are plain HTTP sent
    back to back from one thread, so they reach the server together (boto3 clients on
    threads arrive spread out by their own signing work)."""
    address = urlsplit(url)
    connections = [
        http.client.HTTPConnection(address.hostname or "", address.port) for _ in range(writers)
    ]
    bucket = f"/race-{uuid.uuid4().hex[:8]}"

    def put(path: str, writers: int = 1, **condition: str) -> tuple[str, str]:
        """Returns the race's outcome and the ETag of the first reply. Each writer's body is
        its own: an ETag (the MD5 of the body) a winner leaves must match no one's If-Match."""
        headers = {"Authorization": AUTHORIZATION, **condition}
        for i, connection in enumerate(connections[:writers]):
            body = b"%d of %d" % (i, writers)
            connection.request("PUT", path, body=body, headers=headers)
        replies = [connection.getresponse() for connection in connections[:writers]]
        for reply in replies:
            reply.read()
        if any(reply.status not in (200, 412) for reply in replies):
            return "500", ""
        return f"{sum(r.status == 200 for r in replies)} won", replies[0].getheader("ETag", "")

    connections[0].request("PUT", bucket, headers={"Authorization": AUTHORIZATION})
    connections[0].getresponse().read()
    races: Counter[str] = Counter()
    try:
        for n in range(rounds):
            _, etag = put(f"{bucket}/cas-{n}")
            races[put(f"{bucket}/cas-{n}", writers, **{"If-Match": etag})[0]] += 1
            races[put(f"{bucket}/new-{n}", writers, **{"If-None-Match": "*"})[0]] += 1
    finally:
        for connection in connections:
            connection.close()
    return races


def sqs_client(url: str) -> Any:
    config = Config(retries={"max_attempts": 1}, max_pool_connections=50)
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1", config=config)


def together(n: int, task: Callable[[int], T]) -> list[T]:
    """``task(0..n-1)`` on n threads, released at once."""
    start = threading.Barrier(n)

    def run(i: int) -> T:
        start.wait()
        return task(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def race_sqs(url: str, messages: int, receivers: int) -> Counter[str]:
    """``receivers`` clients long-poll one queue while messages arrive one at a time (each send
    wakes them all), and delete what they get, as the concurrent-consumers contract test does.
    Returns how many deliveries had each receive count (``"1"``, ``"2"``...), and how many
    messages were delivered more than once (``"twice"``), never (``"missing"``), or had their
    delete refused (``"invalid receipt"``: two receives marking one message at once leave
    one of the receipts they hand out unknown to moto)."""
    clients = [sqs_client(url) for _ in range(receivers + 1)]
    queue = clients[0].create_queue(QueueName=f"race-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sent: list[str] = []
    got: list[tuple[str, str]] = []
    refused: list[str] = []
    done = threading.Event()

    def produce(sqs: Any) -> None:
        time.sleep(0.2)  # the receivers into their long polls first
        for _ in range(messages):
            sent.append(sqs.send_message(QueueUrl=queue, MessageBody="m")["MessageId"])

    def consume(sqs: Any) -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            reply = sqs.receive_message(
                QueueUrl=queue,
                WaitTimeSeconds=1,
                VisibilityTimeout=60,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            for message in reply.get("Messages", []):
                got.append((message["MessageId"], message["Attributes"]["ApproximateReceiveCount"]))
                try:
                    sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                except ClientError:
                    refused.append(message["MessageId"])
                if len({id_ for id_, _ in got}) >= messages:
                    done.set()

    together(receivers + 1, lambda i: (produce if i == receivers else consume)(clients[i]))
    received = {id_ for id_, _ in got}
    counts = Counter(count for _, count in got)
    counts["twice"] = len(got) - len(received)
    counts["missing"] = len(set(sent) - received)
    counts["invalid receipt"] = len(refused)
    return counts


def test_racing_conditional_writers_one_wins(wrapped_moto: str) -> None:
    assert race_s3(wrapped_moto, rounds=100, writers=6) == Counter({"1 won": 200})


def test_racing_receivers_never_share_a_message(wrapped_moto: str) -> None:
    assert race_sqs(wrapped_moto, messages=150, receivers=8) == Counter({"1": 150})


def test_a_lease_lapsing_in_a_long_poll_is_received_in_it(wrapped_moto: str) -> None:
    """The lock lets go while moto's receive loop waits, a second at a time, and its next pass
    finds the lapsed lease (nothing notifies the queue when a visibility timeout lapses)."""
    sqs = sqs_client(wrapped_moto)
    queue = sqs.create_queue(QueueName=f"lapse-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="m")
    assert len(sqs.receive_message(QueueUrl=queue, VisibilityTimeout=1)["Messages"]) == 1
    start = time.monotonic()
    again = sqs.receive_message(
        QueueUrl=queue,
        WaitTimeSeconds=10,
        VisibilityTimeout=30,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    ).get("Messages", [])
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in again] == ["2"]
    assert time.monotonic() - start < 5


def test_a_send_wakes_a_long_poll(wrapped_moto: str) -> None:
    sqs = sqs_client(wrapped_moto)
    queue = sqs.create_queue(QueueName=f"wake-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    timer = threading.Timer(0.5, lambda: sqs.send_message(QueueUrl=queue, MessageBody="m"))
    start = time.monotonic()
    timer.start()
    try:
        got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=10).get("Messages", [])
    finally:
        timer.join()
    assert len(got) == 1
    assert time.monotonic() - start < 5
