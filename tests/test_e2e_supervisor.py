"""``chute dev`` as a supervisor: what it runs and with which environment, clear refusals, and
stopping: every child gone after Ctrl-C or SIGTERM (exit 0), everything stopped when a
container dies (exit 1)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from e2e_support import (
    EXAMPLE,
    PATIENCE,
    PY,
    Processes,
    alive,
    group_alive,
    start_chute_dev,
)

import chute
from chute.testing import free_port

#: A stand-in container: records what it was started with, then listens on CORTEX_PORT (enough
#: for the default TCP readiness probe) until the file ``crash-now`` appears, then exits 3.
CONTAINER = """\
import http.server, json, os, sys, threading, time
from pathlib import Path

keys = ["CORTEX_PORT", "CORTEX_VERSION", "CHUTE_GATEWAY_URL", "CHUTE_MNT", "GREETING"]
seen = {"argv": sys.argv, "executable": sys.executable, "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in keys}}
Path(os.environ["CHUTE_MNT"], "seen.json").write_text(json.dumps(seen))
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["CORTEX_PORT"])),
                                http.server.BaseHTTPRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
while not Path("crash-now").exists():
    time.sleep(0.05)
sys.exit(3)
"""


def write_api(directory: Path, command: str | None) -> Path:
    (directory / "container.py").write_text(CONTAINER)
    command_line = f"        command: {command}\n" if command else ""
    api_file = directory / "api.yaml"
    api_file.write_text(
        "- name: stand-in\n"
        "  kind: AsyncAPI\n"
        "  pod:\n"
        "    containers:\n"
        "      - name: web\n"
        "        image: registry.example.com/stand-in:1\n"
        f"{command_line}"
        "        env:\n"
        "          GREETING: hello on $(CORTEX_PORT)\n"
    )
    return api_file


STAND_IN = '["python", "container.py", "$(CORTEX_PORT)", "$(NOT_SET)", "$$(CORTEX_PORT)"]'


def test_a_container_without_command_or_dockerfile_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    api_file = write_api(tmp_path, command=None)
    state = tmp_path / "state"
    argv = [PY, "-m", "chute", "dev", str(api_file), "--port", str(free_port())]
    done = subprocess.run(
        [*argv, "--state-dir", str(state)], capture_output=True, text=True, timeout=PATIENCE
    )
    assert done.returncode != 0
    assert "container 'web' has no `command`" in done.stderr
    assert "no Dockerfile beside the API file" in done.stderr
    assert "Add a `command`" in done.stderr
    assert done.stdout == ""
    assert not state.exists()


def test_a_command_not_found_is_refused_before_anything_starts(tmp_path: Path) -> None:
    api_file = write_api(tmp_path, command='["no-such-server-binary", "--port", "$(CORTEX_PORT)"]')
    state = tmp_path / "state"
    argv = [PY, "-m", "chute", "dev", str(api_file), "--port", str(free_port())]
    done = subprocess.run(
        [*argv, "--state-dir", str(state)], capture_output=True, text=True, timeout=PATIENCE
    )
    assert done.returncode == 3  # a configuration problem (docs/cli.md)
    assert "command 'no-such-server-binary' not found on the PATH" in done.stderr
    assert not state.exists()


def test_containers_get_the_pod_environment_and_k8s_expansion(
    tmp_path: Path, processes: Processes
) -> None:
    api_file = write_api(tmp_path, command=STAND_IN)
    dev = start_chute_dev(processes, api_file, tmp_path / "state")
    dev.wait_ready()
    seen = json.loads((tmp_path / "state" / "mnt" / "seen.json").read_text())
    port = seen["env"]["CORTEX_PORT"]
    assert int(port) > 0
    # "python" is the interpreter chute runs on; $(VAR) expands, unknown stays, $$ escapes.
    assert seen["executable"] == PY
    assert seen["argv"][1:] == [port, "$(NOT_SET)", "$(CORTEX_PORT)"]
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"] == {
        "CORTEX_PORT": port,
        "CORTEX_VERSION": chute.__version__,
        "CHUTE_GATEWAY_URL": dev.url,
        "CHUTE_MNT": str(tmp_path / "state" / "mnt"),
        "GREETING": f"hello on {port}",
    }


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_every_process_and_exits_0(
    sig: signal.Signals, tmp_path: Path, processes: Processes
) -> None:
    dev = start_chute_dev(processes, EXAMPLE, tmp_path / "state")
    dev.wait_ready()
    children = dev.child_pids()
    assert set(children) == {
        "gateway",
        "hello-world/dequeuer",
        "hello-world/api",
        "cortex-address",  # Cortex's in-cluster URL for the containers (chute._dev._proxy)
    }
    assert all(alive(pid) for pid in children.values())
    # Ready means the proxy listens too: a container's first call through it finds it there.
    argv = Path(f"/proc/{children['cortex-address']}/cmdline").read_bytes().split(b"\0")
    proxy_port = int(argv[argv.index(b"--port") + 1])
    socket.create_connection(("127.0.0.1", proxy_port), timeout=5).close()

    dev.proc.signal(sig)
    assert dev.proc.wait() == 0, dev.proc.output()
    for name, pid in children.items():
        assert not alive(pid), f"{name} (pid {pid}) outlived chute dev"
        assert not group_alive(pid), f"something {name} started outlived chute dev"
    output = dev.proc.output()
    assert f"received {sig.name}" in output
    assert "stopped" in output
    assert not (tmp_path / "state" / "dev.json").exists()


def test_a_container_that_exits_stops_everything_and_exits_non_zero(
    tmp_path: Path, processes: Processes
) -> None:
    api_file = write_api(tmp_path, command=STAND_IN)
    dev = start_chute_dev(processes, api_file, tmp_path / "state")
    dev.wait_ready()
    children = dev.child_pids()

    (tmp_path / "crash-now").touch()
    assert dev.proc.wait() == 1
    output = dev.proc.output()
    assert "stand-in/web exited unexpectedly with code 3" in output
    for name, pid in children.items():
        assert not alive(pid), f"{name} (pid {pid}) outlived chute dev"


def test_one_state_directory_serves_one_chute_dev(tmp_path: Path, processes: Processes) -> None:
    first = start_chute_dev(processes, EXAMPLE, tmp_path / "state")
    first.wait_ready()
    second = start_chute_dev(processes, EXAMPLE, tmp_path / "state")
    assert second.proc.wait() == 1
    assert "another chute dev is running with the state directory" in second.proc.output()
    assert first.proc.running()
