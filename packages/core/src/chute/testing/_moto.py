"""moto's server with S3's conditional writes made atomic, as S3 makes them.

moto checks an ``If-Match`` / ``If-None-Match`` precondition and then writes, without a lock,
on a threaded server: two conditional writes racing for one object can both pass the check,
where S3 lets exactly one win. chute's S3 store relies on that (its records move by
compare-and-set) and its tests race writers on purpose, so the services fixture starts moto
through this module, which holds a lock of the object's own around each S3 request that
carries a precondition: a put, a delete, and the POST that completes a multipart upload.
Every other request (unconditional writes, reads, SQS and its long polls) runs as before, and
conditional writes to different objects do not wait for each other.

    python -m chute.testing._moto -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

#: The S3 handlers of moto that check a precondition before they write.
CONDITIONAL = ("put_object", "delete_object", "_key_response_post")
PRECONDITIONS = ("If-Match", "If-None-Match")


class _ObjectLocks:
    """One lock per (bucket, key), made on first use."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, bucket: str, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((bucket, key), threading.Lock())


def _atomic(locks: _ObjectLocks, handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def locked(response: Any, *args: Any, **kwargs: Any) -> Any:
        if not any(response.headers.get(name) for name in PRECONDITIONS):
            return handler(response, *args, **kwargs)
        with locks(response.bucket_name, response.parse_key_name()):
            return handler(response, *args, **kwargs)

    return locked


def main(argv: list[str] | None = None) -> None:
    from moto.s3.responses import S3Response
    from moto.server import main as moto_main

    locks = _ObjectLocks()
    for name in CONDITIONAL:
        setattr(S3Response, name, _atomic(locks, getattr(S3Response, name)))
    moto_main(argv)


if __name__ == "__main__":
    main()
