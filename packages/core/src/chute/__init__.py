"""chute: Async APIs for containerised HTTP services, on Cortex's protocol."""

from chute._version import __version__
from chute.errors import ChuteError
from chute.hookspecs import hookimpl
from chute.protocol import REQUEST_ID_HEADER, Status
from chute.registry import open_queue, open_store

__all__ = [
    "REQUEST_ID_HEADER",
    "ChuteError",
    "Status",
    "__version__",
    "hookimpl",
    "open_queue",
    "open_store",
]
