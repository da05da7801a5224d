"""``chute demo``, the README's first command: it runs the example end to end and exits 0."""

from __future__ import annotations

import subprocess

from e2e_support import PATIENCE, PY, ROOT


def test_chute_demo_runs_the_example_and_exits_0() -> None:
    done = subprocess.run(
        [PY, "-m", "chute", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3 * PATIENCE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Three results printed, each completed with the greeting for its payload.
    assert done.stdout.count('"status": "completed"') == 3, done.stdout
    for text in ("world", "chute", "Cortex containers"):
        assert f'"message": "hello, {text}!"' in done.stdout
    assert "chute dev examples/hello-world/api.yaml" in done.stdout
