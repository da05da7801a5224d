"""Planning ``chute dev``: from an API file to every process, port and environment (the
gateway, the Cortex-address proxy, per API a dequeuer and its containers, run locally, from
their Dockerfiles, or by docker/podman), checked before anything starts."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from chute._container_runtime import (
    HOST_ALIAS,
    Runtime,
    build_argv,
    container_name,
    image_tag,
    run_argv,
)
from chute._dev._dockerfile import ImageStart, choose_dockerfile, read_start
from chute._dev._spec import (
    APIPlan,
    DevPlan,
    ProcessSpec,
    default_backend_url,
    local_api_file,
    mnt_dir,
)
from chute._net import free_port
from chute._version import __version__
from chute.config import API, Container, Probe, load_apis
from chute.errors import ConfigError, DevError

#: Extra time a dequeuer gets beyond its own grace period before it is killed.
DEQUEUER_MARGIN = 5.0
_VAR_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` as Kubernetes does in ``command``, ``args`` and ``env`` values.

    ``$(VAR)`` becomes VAR's value; a reference to an undefined variable is left as written;
    ``$$`` is an escaped ``$`` (so ``$$(VAR)`` gives the literal ``$(VAR)``).
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2)
        return env.get(name, match.group(0))

    return _VAR_REFERENCE.sub(replace, text)


def plan(
    api_file: str | os.PathLike[str],
    *,
    port: int = 8888,
    host: str = "127.0.0.1",
    state_dir: str | os.PathLike[str] = ".chute",
    queue_url: str | None = None,
    store_url: str | None = None,
    grace_period: float = 30.0,
    lease: float | None = None,
    access_log: bool = True,
    dockerfiles: Mapping[str, Path] | None = None,
    attach: Mapping[str, int] | None = None,
    runtime: Runtime = "local",
    cortex_address: bool = True,
) -> DevPlan:
    """Check the API file and decide every process, port and environment; start nothing.

    A container without a ``command`` starts as its image would, read from the Dockerfile
    beside the API file (``dockerfiles`` names one per container where the choice is not
    clear; see :mod:`chute._dev._dockerfile`). ``attach`` maps an API to the port of a server the
    user already runs: its dequeuer feeds that server and none of its containers is started.
    ``runtime`` ``docker`` or ``podman`` runs the images instead (built from those Dockerfiles,
    :attr:`DevPlan.builds`; see :mod:`chute._container_runtime`). ``cortex_address``: local
    containers reach the gateway by Cortex's in-cluster URL too, through a small proxy
    (:mod:`chute._dev._proxy`).

    Raises :class:`ConfigError` for an invalid file, an unknown name in ``dockerfiles`` or
    ``attach``, or a container that cannot be started, before anything starts.
    """
    path = Path(api_file).resolve()
    apis = load_apis(path)
    attach = dict(attach or {})
    _check_names(path, apis, dockerfiles or {}, attach)
    starts = {
        (api.name, c.name): _image_start(path, api, c, dockerfiles or {})
        for api in apis
        if api.name not in attach and runtime == "local"
        for c in api.pod.containers
        if not c.command
    }
    state = Path(state_dir).resolve()
    backend = default_backend_url(state)
    queue_url, store_url = queue_url or backend, store_url or backend
    port = port or free_port(host)  # 0: any free port, as for `chute gateway`
    gateway_url = f"http://{_url_host(host)}:{port}"
    mnt = mnt_dir(state)

    # Locally all APIs share one network, unlike pods: each API gets a free port, handed to
    # its container as CORTEX_PORT; the file the gateway and dequeuers read says the same.
    planned = [
        APIPlan(
            api.name,
            api.endpoint,
            _local_port(api, starts, attach),
            free_port(),
        )
        for api in apis
    ]
    local_apis = [_with_port(api, p.port) for api, p in zip(apis, planned, strict=True)]
    local_file = local_api_file(state)

    py = sys.executable
    processes = [
        ProcessSpec(
            name="gateway",
            role="gateway",
            argv=[py, "-m", "chute", "gateway", str(local_file), "--host", host]
            + ["--port", str(port), "--queue", queue_url, "--store", store_url]
            + ["--access-log" if access_log else "--no-access-log"],
            env=_process_env({}),
            cwd=path.parent,
            grace=grace_period,
        )
    ]
    # Cortex's in-cluster address for local containers: their plain-HTTP calls go through a
    # proxy that sends that host to the gateway and everything else where it was going.
    proxy: dict[str, str] = {}
    if cortex_address and runtime == "local" and any(a.name not in attach for a in apis):
        proxy_port = free_port()
        # Imported here, not at the top: `python -m chute._dev._proxy` imports chute._dev first,
        # which must not have imported the module it is about to run.
        from chute._dev._proxy import proxy_env

        proxy = proxy_env(f"http://127.0.0.1:{proxy_port}")
        processes.append(
            ProcessSpec(
                name="cortex-address",
                role="proxy",
                argv=[py, "-m", "chute._dev._proxy", "--port", str(proxy_port)]
                + ["--gateway", gateway_url],
                env=_process_env({}),
                cwd=path.parent,
                grace=grace_period,
                listens_on=proxy_port,
            )
        )
    dequeuer = _dequeuer_command()
    builds: list[list[str]] = []
    for api, p in zip(apis, planned, strict=True):
        argv = dequeuer + ["--api-file", str(local_file), "--api", api.name]
        argv += ["--user-port", str(p.port), "--workers", str(api.pod.max_concurrency)]
        argv += ["--admin-port", str(p.admin_port), "--admin-host", "127.0.0.1"]
        argv += ["--queue", queue_url, "--store", store_url]
        argv += ["--grace-period", _number(grace_period)]
        if lease is not None:
            argv += ["--lease", _number(lease)]
        processes.append(
            ProcessSpec(
                name=f"{api.name}/dequeuer",
                role="dequeuer",
                argv=argv,
                env=_process_env({}),
                cwd=path.parent,
                grace=grace_period + DEQUEUER_MARGIN,
            )
        )
        if api.name in attach:
            continue  # the user runs its server
        if runtime != "local":
            processes += _engine_processes(
                runtime, path, api, p, dockerfiles or {}, gateway_url=gateway_url, mnt=mnt,
                grace=grace_period, builds=builds,
            )  # fmt: skip
            continue
        for container in api.pod.containers:
            env = container_env(container, port=p.port, gateway_url=gateway_url, mnt=mnt)
            start = starts.get((api.name, container.name))
            cwd = path.parent
            if start is None:
                words = [*(container.command or []), *(container.args or [])]
                argv = [expand_vars(a, env) for a in words]
            else:
                # The image's ENV first, the pod's (CORTEX_PORT, the container's env) on top,
                # as in a pod; `args` replace the image's CMD as Kubernetes does.
                env = {**start.env, **env}
                argv = start.argv
                if container.args:
                    argv = [*start.argv[: len(start.argv) - start.cmd_length], *container.args]
                cwd = start.workdir
            if argv[0] in ("python", "python3"):
                argv[0] = py
            env = _process_env({**proxy, **env})  # the container's own env wins
            if start is not None:
                # Programs the image installs with pip are found in chute's own environment.
                env["PATH"] = os.pathsep.join([str(Path(py).parent), env.get("PATH", "")])
                _check_image_program(start, env, path, api, container)
            else:
                _check_executable(argv[0], env.get("PATH"), path, api, container)
            processes.append(
                ProcessSpec(
                    name=f"{api.name}/{container.name}",
                    role="container",
                    argv=argv,
                    env=env,
                    cwd=cwd,
                    grace=grace_period,
                    hint=_requirements_hint(start),
                )
            )

    return DevPlan(
        api_file=path,
        state_dir=state,
        gateway_url=gateway_url,
        queue_url=queue_url,
        store_url=store_url,
        apis=planned,
        processes=processes,
        local_apis=local_apis,
        builds=builds,
    )


def container_env(
    container: Container, *, port: int, gateway_url: str, mnt: Path
) -> dict[str, str]:
    """A container's environment as the pod would give it, plus chute dev's stand-ins.

    Cortex's variables come first, then chute's, then the container's own ``env`` sorted by key
    (as Cortex orders them); each value may refer to the ones before it with ``$(VAR)``.
    """
    env = {
        "CORTEX_VERSION": __version__,
        "CORTEX_LOG_LEVEL": "INFO",
        "CORTEX_PORT": str(port),
        "CHUTE_GATEWAY_URL": gateway_url,
        "CHUTE_MNT": str(mnt),
    }
    for key in sorted(container.env):
        env[key] = expand_vars(container.env[key], env)
    return env


def _process_env(overrides: Mapping[str, str]) -> dict[str, str]:
    # Children inherit this environment (PATH, the virtualenv, credentials), unlike a pod.
    # Unbuffered output so lines appear as they are written; readable logs unless the user
    # chose a format.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("CHUTE_LOG_FORMAT", "text")
    env.update(overrides)
    return env


def _with_port(api: API, port: int) -> API:
    """``api`` listening on ``port``: pod.port and the probes that pointed at pod.port."""
    old = api.pod.port

    def probe(p: Probe | None) -> Probe | None:
        if p is None:
            return None
        http_get, tcp = p.http_get, p.tcp_socket
        if http_get is not None and http_get.port == old:
            http_get = msgspec.structs.replace(http_get, port=port)
        if tcp is not None and tcp.port == old:
            tcp = msgspec.structs.replace(tcp, port=port)
        return msgspec.structs.replace(p, http_get=http_get, tcp_socket=tcp)

    containers = [
        msgspec.structs.replace(
            c, readiness_probe=probe(c.readiness_probe), liveness_probe=probe(c.liveness_probe)
        )
        for c in api.pod.containers
    ]
    pod = msgspec.structs.replace(api.pod, port=port, containers=containers)
    return msgspec.structs.replace(api, pod=pod)


def _dequeuer_command() -> list[str]:
    if importlib.util.find_spec("chute_dequeuer") is None:
        from chute.install import install_line

        raise DevError(
            "chute dev runs the dequeuer sidecar, which is not installed; install it with: "
            + install_line("dequeuer")
        )
    return [sys.executable, "-m", "chute_dequeuer"]


def _check_executable(
    program: str, search: str | None, path: Path, api: API, container: Container
) -> None:
    # Refuse before anything starts rather than after the other processes came up.
    if os.sep in program:
        found = (path.parent / program).is_file()
    else:
        found = shutil.which(program, path=search) is not None
    if not found:
        where = "relative to the API file" if os.sep in program else "on the PATH"
        raise ConfigError(
            f"{path}: API {api.name!r}, container {container.name!r}: "
            f"command {program!r} not found {where}"
        )


def attach_port(target: str) -> int:
    """The port of ``--attach API=URL``: the dequeuer is a sidecar and calls its server on
    127.0.0.1, as in a pod, so the URL must be a loopback one (or just a port)."""
    from urllib.parse import urlsplit

    if target.isdigit():
        port = int(target)
    else:
        url = urlsplit(target if "//" in target else f"http://{target}")
        if url.hostname not in ("127.0.0.1", "localhost", "::1") or url.port is None:
            raise ConfigError(
                f"--attach …={target}: give the port of a server on this machine "
                "(http://127.0.0.1:PORT or PORT): the dequeuer calls its container on 127.0.0.1"
            )
        if url.path not in ("", "/"):
            raise ConfigError(f"--attach …={target}: the container is called at /, not a path")
        port = url.port
    if not 1 <= port <= 65535:
        raise ConfigError(f"--attach …={target}: port must be 1..65535")
    return port


def _engine_processes(
    runtime: Runtime,
    path: Path,
    api: API,
    plan: APIPlan,
    dockerfiles: Mapping[str, Path],
    *,
    gateway_url: str,
    mnt: Path,
    grace: float,
    builds: list[list[str]],
) -> list[ProcessSpec]:
    """One ``docker run`` per container of ``api``, as its pod would run them: a container
    without ``command`` is built from its Dockerfile; one with a command runs its ``image``."""
    # Inside the engine's network the gateway is on the host.
    inside_url = gateway_url.replace("127.0.0.1", HOST_ALIAS).replace("localhost", HOST_ALIAS)
    out: list[ProcessSpec] = []
    first: str | None = None
    for container in api.pod.containers:
        image = container.image
        if not container.command:
            image = image_tag(api.name, container.name)
            builds.append(
                build_argv(runtime, _dockerfile(path, api, container, dockerfiles), image)
            )
        env = container_env(container, port=api.pod.port, gateway_url=inside_url, mnt=Path("/mnt"))
        name = container_name(api.name, container.name, plan.port)
        argv = run_argv(
            runtime,
            image=image,
            name=name,
            env=env,
            mnt=mnt,
            publish=(plan.port, api.pod.port) if first is None else None,
            network_of=first,
            command=[expand_vars(a, env) for a in container.command or []],
            args=[expand_vars(a, env) for a in container.args or []],
        )
        first = first or name
        out.append(
            ProcessSpec(
                name=f"{api.name}/{container.name}",
                role="container",
                argv=argv,
                env=_process_env({}),
                cwd=path.parent,
                grace=grace,
            )
        )
    return out


def _check_names(
    path: Path, apis: Sequence[API], dockerfiles: Mapping[str, Path], attach: Mapping[str, int]
) -> None:
    containers = {c.name for api in apis for c in api.pod.containers}
    containers |= {f"{api.name}/{c.name}" for api in apis for c in api.pod.containers}
    for name in dockerfiles:
        if name not in containers:
            known = ", ".join(sorted(containers))
            raise ConfigError(f"--dockerfile {name}=…: {path} has no container {name!r} ({known})")
    names = {api.name for api in apis}
    for name in attach:
        if name not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"--attach {name}=…: {path} has no API {name!r} ({known})")


def _dockerfile(
    path: Path, api: API, container: Container, dockerfiles: Mapping[str, Path]
) -> Path:
    """The Dockerfile of a container without ``command`` (``--dockerfile`` first)."""
    explicit = dockerfiles.get(f"{api.name}/{container.name}", dockerfiles.get(container.name))
    return choose_dockerfile(path, api.name, container.name, explicit=explicit)


def _image_start(
    path: Path, api: API, container: Container, dockerfiles: Mapping[str, Path]
) -> ImageStart:
    return read_start(_dockerfile(path, api, container, dockerfiles))


def _local_port(
    api: API, starts: Mapping[tuple[str, str], ImageStart], attach: Mapping[str, int]
) -> int:
    """Where ``api``'s server listens here: the attached server's port; the pod's own port
    when an image's start names its port without $CORTEX_PORT (it cannot be moved); else a
    free port, handed over as CORTEX_PORT."""
    if api.name in attach:
        return attach[api.name]
    for (name, _), start in starts.items():
        if name == api.name and "CORTEX_PORT" not in " ".join(start.argv):
            return api.pod.port
    return free_port()


def _check_image_program(
    start: ImageStart, env: Mapping[str, str], path: Path, api: API, container: Container
) -> None:
    """Refuse before anything starts when the program the image runs is not installed here."""
    argv = start.argv
    if argv[:2] == ["/bin/sh", "-c"]:
        try:
            words = shlex.split(argv[2])
        except ValueError:
            return  # let the shell say what is wrong
        words = [w for w in words if w != "exec" and "=" not in w.split("/")[0]]
        program = words[0] if words else ""
        if not program or "$" in program:
            return
    else:
        program = argv[0]
    if program in ("python", "python3") or (os.sep in program and Path(program).is_file()):
        return
    if shutil.which(program, path=env.get("PATH")) is None:
        hint = _requirements_hint(start) or "install it in this environment"
        raise ConfigError(
            f"{path}: API {api.name!r}, container {container.name!r}: {start.dockerfile.name} "
            f"starts {program!r}, which is not installed here: {hint}"
        )


def _requirements_hint(start: ImageStart | None) -> str | None:
    if start is None or start.requirements is None:
        return None
    return (
        f"{start.dockerfile.name} installs its dependencies from {start.requirements}: "
        f"pip install -r {start.requirements}"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
