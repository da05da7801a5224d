"""Which client should chute's Pub/Sub queue use?

    pip install gcloud-aio-pubsub google-cloud-pubsub   # the candidates chute does not ship
    python benchmarks/pubsub_client.py [--ops 300] [--rounds 3] [--endpoint http://host:port]

Against Google's Pub/Sub emulator (``--endpoint``, else ``$PUBSUB_EMULATOR_HOST``, else the
gcloud component's emulator started here on a free port), each candidate publishes one message,
pulls one and acks one, ``--ops`` times in a row:

* ``aiohttp REST``: direct calls to the REST API on an aiohttp session (what chute does);
* ``gcloud-aio-pubsub``: the same API through gcloud-aio's clients (also aiohttp);
* ``google-cloud-pubsub gRPC``: Google's generated asyncio clients on a grpc.aio channel.

Reports the client process's CPU time per operation (``time.process_time``: what the gateway
and the dequeuer pay, whatever the emulator costs) and wall time, median over interleaved
rounds. Candidates whose package is missing are skipped. The figures are in docs/gcs.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PROJECT = "bench"
DATA = b"0190f1f2-0000-7000-8000-000000000000"  # a request id
Op = Callable[[], Awaitable[None]]


class Candidate:
    """Publish, pull and ack one message at a time on one topic and subscription."""

    name = ""

    async def start(self, endpoint: str, topic: str, subscription: str) -> None:
        raise NotImplementedError

    async def publish(self) -> None:
        raise NotImplementedError

    async def pull(self) -> None:
        raise NotImplementedError

    async def ack(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class AiohttpRest(Candidate):
    name = "aiohttp REST (chute)"

    async def start(self, endpoint: str, topic: str, subscription: str) -> None:
        import aiohttp
        import msgspec

        self.session = aiohttp.ClientSession()
        self.encode = msgspec.json.encode
        self.decode = msgspec.json.Decoder(dict[str, Any]).decode
        self.topic_url = f"{endpoint}/v1/{topic}:publish"
        self.pull_url = f"{endpoint}/v1/{subscription}:pull"
        self.ack_url = f"{endpoint}/v1/{subscription}:acknowledge"
        self.data = base64.b64encode(DATA).decode()
        self.ack_ids: list[str] = []

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        async with self.session.post(url, data=self.encode(body), headers=headers) as reply:
            answer: dict[str, Any] = self.decode(await reply.read())
            assert reply.status == 200, answer
            return answer

    async def publish(self) -> None:
        await self._post(self.topic_url, {"messages": [{"data": self.data}]})

    async def pull(self) -> None:
        answer = await self._post(self.pull_url, {"maxMessages": 1})
        self.ack_ids.extend(m["ackId"] for m in answer["receivedMessages"])

    async def ack(self) -> None:
        await self._post(self.ack_url, {"ackIds": [self.ack_ids.pop()]})

    async def close(self) -> None:
        await self.session.close()


class GcloudAio(Candidate):
    name = "gcloud-aio-pubsub"

    async def start(self, endpoint: str, topic: str, subscription: str) -> None:
        import aiohttp
        from gcloud.aio.pubsub import PublisherClient, PubsubMessage, SubscriberClient

        os.environ["PUBSUB_EMULATOR_HOST"] = endpoint.removeprefix("http://")
        self.session = aiohttp.ClientSession()
        self.publisher = PublisherClient(session=self.session)
        self.subscriber = SubscriberClient(session=self.session)
        self.message = PubsubMessage
        self.topic, self.subscription = topic, subscription
        self.ack_ids: list[str] = []

    async def publish(self) -> None:
        await self.publisher.publish(self.topic, [self.message(DATA)])

    async def pull(self) -> None:
        messages = await self.subscriber.pull(self.subscription, max_messages=1)
        self.ack_ids.extend(m.ack_id for m in messages)

    async def ack(self) -> None:
        await self.subscriber.acknowledge(self.subscription, [self.ack_ids.pop()])

    async def close(self) -> None:
        await self.session.close()


class GoogleGrpc(Candidate):
    name = "google-cloud-pubsub gRPC"

    async def start(self, endpoint: str, topic: str, subscription: str) -> None:
        import grpc
        from google.auth.credentials import AnonymousCredentials
        from google.pubsub_v1.services.publisher import PublisherAsyncClient
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
        from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
        from google.pubsub_v1.services.subscriber.transports import (
            SubscriberGrpcAsyncIOTransport,
        )
        from google.pubsub_v1.types import PubsubMessage

        target = endpoint.removeprefix("http://")
        self.channels = [grpc.aio.insecure_channel(target), grpc.aio.insecure_channel(target)]
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        self.publisher = PublisherAsyncClient(
            transport=PublisherGrpcAsyncIOTransport(
                credentials=anonymous, channel=self.channels[0]
            ),
        )
        self.subscriber = SubscriberAsyncClient(
            transport=SubscriberGrpcAsyncIOTransport(
                credentials=anonymous, channel=self.channels[1]
            ),
        )
        self.message = PubsubMessage
        self.topic, self.subscription = topic, subscription
        self.ack_ids: list[str] = []

    async def publish(self) -> None:
        await self.publisher.publish(topic=self.topic, messages=[self.message(data=DATA)])

    async def pull(self) -> None:
        reply = await self.subscriber.pull(subscription=self.subscription, max_messages=1)
        self.ack_ids.extend(m.ack_id for m in reply.received_messages)

    async def ack(self) -> None:
        await self.subscriber.acknowledge(
            subscription=self.subscription, ack_ids=[self.ack_ids.pop()]
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


CANDIDATES: list[type[Candidate]] = [AiohttpRest, GcloudAio, GoogleGrpc]


def rest(endpoint: str, method: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{endpoint}/v1/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    urllib.request.urlopen(request, timeout=10).close()


async def measure(candidate: Candidate, ops: int) -> dict[str, tuple[float, float]]:
    """CPU and wall milliseconds per publish, pull and ack."""
    figures: dict[str, tuple[float, float]] = {}
    for label, op in (
        ("publish", candidate.publish),
        ("pull", candidate.pull),
        ("ack", candidate.ack),
    ):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(ops):
            await op()
        figures[label] = (
            (time.process_time() - cpu) * 1000 / ops,
            (time.perf_counter() - wall) * 1000 / ops,
        )
    return figures


async def one_round(
    endpoint: str, kind: type[Candidate], ops: int
) -> dict[str, tuple[float, float]]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{PROJECT}/topics/{name}"
    subscription = f"projects/{PROJECT}/subscriptions/{name}"
    rest(endpoint, "PUT", topic, {})
    rest(endpoint, "PUT", subscription, {"topic": topic, "ackDeadlineSeconds": 600})
    candidate = kind()
    await candidate.start(endpoint, topic, subscription)
    try:
        await measure(candidate, 20)  # warm-up: connections, first-call imports
        return await measure(candidate, ops)
    finally:
        await candidate.close()


def available(kind: type[Candidate]) -> bool:
    modules = {
        AiohttpRest: "aiohttp",
        GcloudAio: "gcloud.aio.pubsub",
        GoogleGrpc: "google.pubsub_v1",
    }
    try:
        __import__(modules[kind])
    except ImportError:
        return False
    return True


def start_emulator() -> tuple[str, subprocess.Popen[bytes]]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise SystemExit("no --endpoint, no $PUBSUB_EMULATOR_HOST and no gcloud to start one")
    script = Path(gcloud).resolve().parent.parent / "platform/pubsub-emulator/bin"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(script / "cloud-pubsub-emulator"), "--host=127.0.0.1", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint, timeout=0.5).close()
            return endpoint, proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the emulator did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint", default=os.environ.get("PUBSUB_EMULATOR_HOST"))
    args = parser.parse_args()
    proc = None
    endpoint = args.endpoint
    if endpoint is None:
        endpoint, proc = start_emulator()
    elif "://" not in endpoint:
        endpoint = f"http://{endpoint}"
    kinds = [k for k in CANDIDATES if available(k)]
    skipped = [k.name for k in CANDIDATES if k not in kinds]
    results: dict[str, list[dict[str, tuple[float, float]]]] = {k.name: [] for k in kinds}
    try:
        for _ in range(args.rounds):
            for kind in kinds:  # interleaved, so drift hits every candidate alike
                results[kind.name].append(asyncio.run(one_round(endpoint, kind, args.ops)))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    print(f"Python {platform.python_version()}, {args.ops} ops x {args.rounds} rounds, median")
    print(f"{'client':28} {'CPU ms publish':>15} {'pull':>7} {'ack':>7} {'wall ms p/p/a':>18}")
    for name, rounds in results.items():
        cpu = [statistics.median(r[op][0] for r in rounds) for op in ("publish", "pull", "ack")]
        wall = [statistics.median(r[op][1] for r in rounds) for op in ("publish", "pull", "ack")]
        print(
            f"{name:28} {cpu[0]:15.3f} {cpu[1]:7.3f} {cpu[2]:7.3f} "
            f"{'/'.join(f'{w:.2f}' for w in wall):>18}"
        )
    if skipped:
        print("skipped (not installed):", ", ".join(skipped))


if __name__ == "__main__":
    main()
