"""Progress and safety on the cluster commands (issue 15, items 8 and 9), through the ``chute``
command's entry point against the recording API server (apiserver.py): ``deploy --dry-run``
changes nothing, ``deploy --wait`` follows the rollout until ready (or times out with exit
status 6), ``status --watch`` prints the table again when it changes, and ``delete`` asks or
needs ``--yes``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver import FakeCluster, api_server

from chute.cli import main

APIS = """
- name: alpha
  kind: AsyncAPI
  pod:
    containers: [{name: api, image: registry.example.com/a:1}]
  autoscaling: {min_replicas: 1, max_replicas: 3}
"""
CLUSTER = "namespace: apps\nobservability: {grafana_dashboard: false}\n"


class Setup:
    def __init__(self, state: FakeCluster, kubeconfig: Path, folder: Path) -> None:
        self.state = state
        self.api_file = folder / "api.yaml"
        self.api_file.write_text(APIS)
        self.cluster_file = folder / "cluster.yaml"
        self.cluster_file.write_text(CLUSTER)
        self.kube = ["--cluster", str(self.cluster_file), "--kubeconfig", str(kubeconfig)]

    def writes(self) -> list[str]:
        return [c.method for c in self.state.calls if c.method in ("PATCH", "DELETE", "POST")]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with api_server(tmp_path) as (state, kubeconfig):
        yield Setup(state, kubeconfig, tmp_path)


def test_deploy_dry_run_changes_nothing(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", str(setup.api_file), *setup.kube, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would apply Deployment api-alpha" in out
    assert "would apply ScaledObject api-alpha" in out
    assert setup.writes() == []
    assert setup.state.objects == {}


def test_deploy_wait_follows_the_rollout_until_ready(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    def controller() -> None:  # what the Deployment controller and the kubelet would report
        deadline = time.monotonic() + 30
        while (api := setup.state.find("Deployment", "api-alpha")) is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        gateway = setup.state.find("Deployment", "chute-gateway")
        assert gateway is not None
        gateway["status"] = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}
        api["status"] = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 0}
        time.sleep(2.5)  # one poll sees it starting
        api["status"] = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}

    thread = threading.Thread(target=controller, daemon=True)
    thread.start()
    code = main(["deploy", str(setup.api_file), *setup.kube, "--wait", "--timeout", "60"])
    thread.join(30)
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    follow = [line for line in lines if line.startswith("api-alpha: ")]
    assert follow[-1] == "api-alpha: 1/1 ready, 1 updated: rolled out"
    assert "chute-gateway: 2/2 ready, 2 updated: rolled out" in lines
    assert len(follow) >= 2, follow  # it showed progress before the end


def test_deploy_wait_gives_up_with_exit_status_6(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["deploy", str(setup.api_file), *setup.kube, "--wait", "--timeout", "0.5"])
    assert code == 6
    err = capsys.readouterr().err
    assert "chute deploy: not rolled out after 0.5 s: api-alpha (0/1 ready, 0 updated)" in err


def test_delete_asks_or_needs_yes(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", str(setup.api_file), *setup.kube]) == 0
    refused = subprocess.run(
        [sys.executable, "-m", "chute", "delete", "alpha", *setup.kube],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert setup.state.find("Deployment", "api-alpha") is not None
    assert main(["delete", "alpha", *setup.kube, "--yes"]) == 0
    assert setup.state.find("Deployment", "api-alpha") is None


def test_status_watch_prints_the_table_again_when_it_changes(setup: Setup, tmp_path: Path) -> None:
    assert main(["deploy", str(setup.api_file), *setup.kube]) == 0
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    argv = [sys.executable, "-m", "chute", "status", *setup.kube, "--queue", queue]
    argv += ["--watch", "--interval", "0.2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=os.environ)
    assert proc.stdout is not None
    try:
        tables: list[list[list[str]]] = []
        lines: list[list[str]] = []
        deadline = time.monotonic() + 60
        while len(tables) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("-- ") and lines:
                tables.append(lines)
                lines = []
            elif not line.startswith("-- "):
                lines.append(line.split()[:2])
                if len(lines) == 2 and not tables:
                    tables.append(lines)
                    lines = []
                    found = setup.state.find("Deployment", "api-alpha")
                    assert found is not None
                    found["status"] = {"readyReplicas": 1, "updatedReplicas": 1}
            if len(lines) == 2 and tables:
                tables.append(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0  # Ctrl-C ends a watch normally
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert tables[0] == [["API", "READY"], ["alpha", "0"]]
    assert tables[1] == [["API", "READY"], ["alpha", "1"]]
