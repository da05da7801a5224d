"""chute: Async APIs for containerised HTTP services, on Cortex's protocol."""

from typing import TYPE_CHECKING, Any

from chute._version import __version__
from chute.errors import ChuteError
from chute.hookspecs import hookimpl
from chute.protocol import REQUEST_ID_HEADER, Status
from chute.registry import open_queue, open_store

if TYPE_CHECKING:
    from chute.client import AsyncClient, Client, Result

__all__ = [
    "REQUEST_ID_HEADER",
    "AsyncClient",
    "ChuteError",
    "Client",
    "Result",
    "Status",
    "__version__",
    "hookimpl",
    "open_queue",
    "open_store",
]

# The client pulls in httpx: imported on first use, so `import chute` (and the CLI) stays fast.
_LAZY = {"AsyncClient", "Client", "Result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from chute import client

        return getattr(client, name)
    raise AttributeError(f"module 'chute' has no attribute {name!r}")
