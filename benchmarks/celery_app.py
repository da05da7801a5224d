"""The Celery comparator: what a Python user builds instead of chute.

Redis as broker and result backend, results kept 7 days, a prefork pool (the harness starts
``celery -A benchmarks.celery_app worker --pool prefork --concurrency 8``). The task POSTs the
payload to the container, with the task id as ``X-Cortex-Request-ID``, and returns the JSON
answer, which the result backend stores.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery

REDIS = os.environ.get("CHUTE_BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/13")
CONTAINER = os.environ.get("CHUTE_BENCH_CONTAINER", "http://127.0.0.1:8080/")

app = Celery("chute_bench", broker=REDIS, backend=REDIS)
app.conf.update(
    result_expires=7 * 24 * 3600,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)

_client: httpx.Client | None = None


def _http() -> httpx.Client:
    # One pooled client per worker process, made after the fork.
    global _client
    if _client is None:
        _client = httpx.Client(timeout=60)
    return _client


@app.task(bind=True, name="call_container")
def call_container(self: Any, payload: Any) -> Any:
    response = _http().post(
        CONTAINER, json=payload, headers={"X-Cortex-Request-ID": str(self.request.id)}
    )
    response.raise_for_status()
    return response.json()
