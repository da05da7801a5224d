"""moto's server with S3's conditional writes made atomic, as S3 makes them.

moto checks an ``If-Match`` / ``If-None-Match`` precondition and then writes, without a lock,
on a threaded server: two conditional writes racing for one object can both pass the check,
where S3 lets exactly one win. chute's S3 store relies on that (its records move by
compare-and-set) and its tests race writers on purpose, so the services fixture starts moto
through this module, which holds one lock around each S3 request that can carry a
precondition: a put, a delete, and the POST that completes a multipart upload. Everything
else (reads, SQS and its long polls) stays concurrent.

    python -m chute.testing._moto -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

#: The S3 handlers of moto that check a precondition before they write.
CONDITIONAL = ("put_object", "delete_object", "_key_response_post")


def _atomic(lock: threading.RLock, handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return handler(*args, **kwargs)

    return locked


def main(argv: list[str] | None = None) -> None:
    from moto.s3.responses import S3Response
    from moto.server import main as moto_main

    lock = threading.RLock()
    for name in CONDITIONAL:
        setattr(S3Response, name, _atomic(lock, getattr(S3Response, name)))
    moto_main(argv)


if __name__ == "__main__":
    main()
