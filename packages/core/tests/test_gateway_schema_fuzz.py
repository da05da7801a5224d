"""Issue 13, item 8: the server and its OpenAPI document agree.

Schemathesis reads ``/openapi.json`` of a real ``chute gateway`` process (on SQLite and on
Redis) and throws a bounded number of generated requests at every operation (examples,
coverage and fuzzing phases, fixed seed), with every check it has: no 5xx, status codes,
content types, headers and bodies as documented, schema-valid requests accepted and invalid
ones rejected, authentication enforced. Any failure fails the test with schemathesis' report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_support import backend_url

from chute.testing.gateway import gateway_process

#: Generated cases per operation and phase; the seed keeps CI runs reproducible.
MAX_EXAMPLES = 40
SEED = 13
KEY = "fuzz-key-0123456789"

API_FILE = """\
- name: hello
  kind: AsyncAPI
  webhook:
    request_urls: [hooks.example.com, "*.example.org", "https://client.example.net/done/"]
  pod:
    containers:
      - name: api
        image: hello:latest
- name: keyed
  kind: AsyncAPI
  networking:
    endpoint: /v1/keyed
  auth:
    keys_env: FUZZ_API_KEYS
  pod:
    containers:
      - name: api
        image: keyed:latest
"""


#: Loaded by schemathesis (``SCHEMATHESIS_HOOKS``): a long-poll on a request that stays queued
#: is held for its whole ``?wait=`` (up to 60 s, as documented); hold valid ones for at most
#: 0.2 s instead, a value just as valid, so that the run stays bounded.
HOOKS = """\
import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    query = case.query
    if isinstance(query, dict) and "wait" in query:
        try:
            wait = float(query["wait"])
        except (TypeError, ValueError):
            return
        if 0.2 < wait <= 60:
            query["wait"] = 0.2
"""
#: Arbitrary extra headers are the container's (the gateway forwards them): they are not
#: schema violations, so schemathesis is told not to send them as such.
CONFIG = """\
[generation]
allow-extra-parameters = false
"""


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request, tmp_path, "fuzz")


def test_schemathesis_finds_no_disagreement(
    tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api_file = tmp_path / "api.yaml"
    api_file.write_text(API_FILE)
    (tmp_path / "fuzz_hooks.py").write_text(HOOKS)
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    st = Path(sys.executable).with_name("st")
    assert st.exists(), "schemathesis is in the test dependency group"
    env = {"FUZZ_API_KEYS": KEY}
    with gateway_process(api_file, queue_url=backend, store_url=backend, env=env) as gw:
        done = subprocess.run(
            [str(st), "run", f"{gw.url}/openapi.json"]
            + ["--checks", "all", "--phases", "examples,coverage,fuzzing"]
            + ["--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--no-shrink"]
            + ["--workers", "1", "--request-timeout", "30"]
            + ["--header", f"Authorization: Bearer {KEY}"]
            + ["--report-dir", str(tmp_path / "report")],
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "NO_COLOR": "1",
                "SCHEMATHESIS_TELEMETRY": "false",
                "SCHEMATHESIS_HOOKS": "fuzz_hooks",
                "PYTHONPATH": str(tmp_path),
            },
            cwd=tmp_path,
        )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    cases = re.search(r"(\d+) generated", report)
    assert cases is not None, report
    assert int(cases.group(1)) >= 100, report  # it really ran
    assert "unexpected error" not in "".join(gw.log)
    with capsys.disabled():
        kind = backend.split(":", 1)[0]
        print(f"\nschemathesis on {kind}: {cases.group(0)} cases, 0 failures")
