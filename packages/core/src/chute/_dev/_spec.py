"""What ``chute dev`` runs, as data: a :class:`DevPlan` of :class:`ProcessSpec` (one per
process) and :class:`APIPlan` (where each API listens), and the state directory's layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chute.config import API, dump_apis

Role = Literal["gateway", "dequeuer", "container", "proxy"]


@dataclass(frozen=True)
class ProcessSpec:
    """One process to run: what, where, with which environment."""

    name: str
    role: Role
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    #: Seconds between SIGTERM and SIGKILL when stopping it.
    grace: float
    #: Said when the process exits before everything is ready (what it may be missing).
    hint: str | None = None
    #: A local port the process listens on once it serves: ``chute dev`` is not ready before.
    listens_on: int | None = None


@dataclass(frozen=True)
class APIPlan:
    """Where one API's processes listen."""

    name: str
    endpoint: str
    port: int
    admin_port: int


@dataclass(frozen=True)
class DevPlan:
    """Everything ``chute dev`` will run for one API file."""

    api_file: Path
    state_dir: Path
    gateway_url: str
    queue_url: str
    store_url: str
    apis: list[APIPlan]
    processes: list[ProcessSpec] = field(default_factory=list)
    #: The APIs as the gateway and dequeuers see them: the file's, with local ports.
    local_apis: list[API] = field(default_factory=list)
    #: Image builds to run before anything starts (``--runtime docker|podman``).
    builds: list[list[str]] = field(default_factory=list)

    @property
    def pids_file(self) -> Path:
        """Where the running supervisor writes its processes' ids (see :meth:`Supervisor.run`)."""
        return self.state_dir / "dev.json"

    @property
    def mnt(self) -> Path:
        """The directory standing in for the pod's shared ``/mnt`` (``CHUTE_MNT``)."""
        return mnt_dir(self.state_dir)

    @property
    def local_api_file(self) -> Path:
        """Where :attr:`local_apis` are written for the gateway and dequeuers to read."""
        return local_api_file(self.state_dir)

    def prepare(self) -> None:
        """Create the state directory, the ``/mnt`` stand-in and the local API file."""
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.local_api_file.parent.mkdir(exist_ok=True)
        self.local_api_file.write_text(
            f"# Written by chute dev from {self.api_file}, with local ports.\n"
            + dump_apis(self.local_apis)
        )


def mnt_dir(state_dir: Path) -> Path:
    """The directory standing in for the pod's shared ``/mnt`` (``CHUTE_MNT``)."""
    return state_dir / "mnt"


def local_api_file(state_dir: Path) -> Path:
    """The API file with local ports that chute dev's gateway and dequeuers read."""
    return state_dir / "dev" / "apis.yaml"


def default_backend_url(state_dir: Path) -> str:
    """The embedded SQLite backend in the state directory (both queue and store)."""
    return f"sqlite:///{state_dir.resolve() / 'chute.db'}"
