"""``chute dev``: an API file's whole system as local processes, under one supervisor.

For an API file, :func:`plan` decides what to run — one gateway, and per API one dequeuer and
each container's ``command`` + ``args`` — and :class:`Supervisor` runs it: it streams every
process's output with its name in front, prints a ready line once the gateway and every
container answer, restarts nothing, and stops everything in order (gateway and dequeuers
first, so in-flight work drains into live containers; then the containers) on request or as
soon as any process exits on its own. See docs/dev.md.

The rooms: ``_spec`` (the plan as data), ``_plan`` (deciding it, reading images with
``_dockerfile``), ``_supervisor`` (running it), ``_preflight`` (checks before it starts)
and ``_proxy`` (Cortex's in-cluster address for local containers). Import from ``chute._dev``.
"""

from __future__ import annotations

from chute._dev._plan import DEQUEUER_MARGIN, attach_port, container_env, expand_vars, plan
from chute._dev._spec import (
    APIPlan,
    DevPlan,
    ProcessSpec,
    Role,
    default_backend_url,
    local_api_file,
    mnt_dir,
)
from chute._dev._supervisor import (
    MAX_LINE,
    SUPERVISOR,
    LineSink,
    PrefixPrinter,
    Supervisor,
    build_images,
    serve,
    supervise,
)
from chute._net import free_port
from chute.errors import DevError

__all__ = [
    "DEQUEUER_MARGIN",
    "MAX_LINE",
    "SUPERVISOR",
    "APIPlan",
    "DevError",
    "DevPlan",
    "LineSink",
    "PrefixPrinter",
    "ProcessSpec",
    "Role",
    "Supervisor",
    "attach_port",
    "build_images",
    "container_env",
    "default_backend_url",
    "expand_vars",
    "free_port",
    "local_api_file",
    "mnt_dir",
    "plan",
    "serve",
    "supervise",
]
