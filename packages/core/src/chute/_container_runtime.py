"""Running a container's image with Docker or Podman, for ``chute dev --runtime docker|podman``.

By default ``chute dev`` runs each container's start as a local process
(:mod:`chute._dev._dockerfile`); with an engine it builds the image from the Dockerfile beside
the API file (or uses the container's ``image`` when there is none) and runs it as a pod would:
the container listens on ``pod.port`` inside, published on a free port of 127.0.0.1 for the
dequeuer; the ``/mnt`` stand-in mounted at ``/mnt``; Cortex's ``CORTEX_*`` variables and the
container's ``env``. The containers of one API share the first one's network, as a pod's
containers share one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from chute.errors import ConfigError

Runtime = Literal["local", "docker", "podman"]
RUNTIMES: tuple[Runtime, ...] = ("local", "docker", "podman")
#: How a container reaches the host (the gateway, for chaining) from inside the engine's network.
HOST_ALIAS = "host.docker.internal"


def check_engine(runtime: Runtime) -> None:
    """Raise :class:`ConfigError` unless ``runtime``'s engine is installed and answers."""
    if shutil.which(runtime) is None:
        raise ConfigError(f"--runtime {runtime}: the {runtime} command is not installed")
    try:
        done = subprocess.run(
            [runtime, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--runtime {runtime}: {runtime} info failed: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(
            f"--runtime {runtime}: no {runtime} engine answers"
            + (f" ({detail[-1]})" if detail else "")
        )


def image_tag(api: str, container: str) -> str:
    """The tag ``chute dev`` builds an API's container under."""
    return f"chute-dev/{api}-{container}:latest"


def build_argv(runtime: Runtime, dockerfile: Path, tag: str) -> list[str]:
    """Build ``dockerfile`` (its folder as the context) as ``tag``."""
    return [runtime, "build", "--file", str(dockerfile), "--tag", tag, str(dockerfile.parent)]


def container_name(api: str, container: str, port: int) -> str:
    """A name unique to this chute dev run (the port is), valid for the engines."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"chute-dev-{api}-{container}-{port}")


def run_argv(
    runtime: Runtime,
    *,
    image: str,
    name: str,
    env: Mapping[str, str],
    mnt: Path,
    publish: tuple[int, int] | None,
    network_of: str | None,
    command: Sequence[str] = (),
    args: Sequence[str] = (),
) -> list[str]:
    """``docker run`` for one container: ``publish`` is (host port, container port) for the
    pod's first container; the others join its network (``network_of``)."""
    argv = [runtime, "run", "--rm", "--name", name, "--init"]
    if publish is not None:
        host_port, port = publish
        argv += ["--publish", f"127.0.0.1:{host_port}:{port}"]
        argv += ["--add-host", f"{HOST_ALIAS}:host-gateway"]
    if network_of is not None:
        argv += ["--network", f"container:{network_of}"]
    argv += ["--volume", f"{mnt}:/mnt"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    if command:
        argv += ["--entrypoint", command[0]]
    argv.append(image)
    argv += [*command[1:], *args]
    return argv
