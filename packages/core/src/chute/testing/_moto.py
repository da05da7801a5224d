"""moto's server with the two check-then-act steps chute's suites race made atomic, as AWS
makes them.

moto serves each request on a thread of its own and takes no lock where it checks and then
acts, so two racing requests can both pass the check:

* S3: a put, a delete, or the POST that completes a multipart upload checks an ``If-Match`` /
  ``If-None-Match`` precondition and then writes. Two conditional writers racing for one
  object could both win, where S3 lets exactly one (the S3 store's records move by
  compare-and-set). A lock of the object's own is held around such a request, and only when
  it carries a precondition: other writes, other objects and reads never wait.
* SQS: ``SQSBackend.receive_message`` checks a message visible and then marks it received, so
  two concurrent ReceiveMessage calls could both take it (the second one sees receive count 2);
  and ``Queue.delete_message`` rebuilds the queue's message list from a copy, so a message
  sent meanwhile could be dropped. Each receive and each delete holds the queue's own lock:
  the one moto already holds to append a sent message, its condition's RLock. moto's receive
  loop waits between its passes on that condition, which lets go of the lock while it waits:
  each pass that selects and marks messages is atomic, and a receive waiting for messages
  holds up no one. moto's loop itself runs unchanged, so a long poll ends as moto's does:
  after its last wait it returns nothing rather than making one more pass. A loop of passes
  of the wrapper's own that made that pass broke the contract suite's lapsed-lease test: the
  message it found at the poll's end got its 1 s lease then, while the client counts a lease
  from when it sent the receive, so the delivery arrived lapsed.

The services fixture starts moto through this module where moto is installed::

    python -m chute.testing._moto -H 127.0.0.1 -p 5000

``$CHUTE_MOTO_SWITCH_INTERVAL`` (seconds) sets the server's ``sys.setswitchinterval``: a tiny
one makes its threads switch between almost any two bytecodes, which is how the tests of this
module provoke both races (packages/backends-sqs/tests/test_moto_wrapper.py).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any

#: The S3 handlers of moto that check a precondition before they write.
CONDITIONAL = ("put_object", "delete_object", "_key_response_post")
PRECONDITIONS = ("If-Match", "If-None-Match")
SWITCH_INTERVAL_ENV = "CHUTE_MOTO_SWITCH_INTERVAL"


class _Locks:
    """One lock per S3 object, made on first use."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, key: Hashable) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def _conditional_write(locks: _Locks, handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def locked(response: Any, *args: Any, **kwargs: Any) -> Any:
        if not any(response.headers.get(name) for name in PRECONDITIONS):
            return handler(response, *args, **kwargs)
        with locks((response.bucket_name, response.parse_key_name())):
            return handler(response, *args, **kwargs)

    return locked


def _under_queue_lock(
    queue_of: Callable[..., Any], method: Callable[..., Any]
) -> Callable[..., Any]:
    """``method`` holding the lock of the queue ``queue_of`` finds among its arguments."""

    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with queue_of(*args)._messages_lock:
            return method(*args, **kwargs)

    return locked


def main(argv: list[str] | None = None) -> None:
    from moto.s3.responses import S3Response
    from moto.server import main as moto_main
    from moto.sqs.models import Queue, SQSBackend

    if interval := os.environ.get(SWITCH_INTERVAL_ENV):
        sys.setswitchinterval(float(interval))
    locks = _Locks()
    for name in CONDITIONAL:
        setattr(S3Response, name, _conditional_write(locks, getattr(S3Response, name)))
    SQSBackend.receive_message = _under_queue_lock(  # type: ignore[method-assign]
        lambda backend, queue_name, *_: backend.get_queue(queue_name),
        SQSBackend.receive_message,
    )
    Queue.delete_message = _under_queue_lock(  # type: ignore[method-assign]
        lambda queue, *_: queue, Queue.delete_message
    )
    moto_main(argv)


if __name__ == "__main__":
    main()
