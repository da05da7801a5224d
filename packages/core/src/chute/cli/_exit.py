"""The ``chute`` command's exit statuses: one meaning per number (docs/cli.md has the table).

Scripts tell "the request failed" from "the gateway is down" from "I typed it wrong" without
reading the message.
"""

from __future__ import annotations

from chute.errors import (
    APIError,
    BackendUnavailable,
    ChuteError,
    ConfigError,
    GatewayUnreachable,
    WaitTimeout,
)

#: Done: the request completed, the file is valid, the action happened.
OK = 0
#: The work ran and ended badly: a request failed, was cancelled or expired; ``cancel`` came
#: too late; ``requeue`` left some requests where they were; a ``chute dev`` process died.
FAILED = 1
#: The command line is wrong (argparse's own status): unknown flag, missing argument, refusal
#: to do something destructive without ``--yes`` when nobody can be asked.
USAGE = 2
#: A file, URL or option is invalid: the API file (``validate``), a backend URL, ``--data @FILE``.
CONFIG = 3
#: Nothing answered: the gateway or a backend cannot be reached.
UNREACHABLE = 4
#: The gateway answered with an error (unknown API or id, 4xx, 5xx).
REJECTED = 5
#: ``--wait`` (or ``--watch``) gave up before the work finished.
TIMEOUT = 6
#: Interrupted (Ctrl-C), as shells report SIGINT.
INTERRUPTED = 130


def for_error(exc: ChuteError) -> int:
    """The exit status for an error that ended a command."""
    if isinstance(exc, WaitTimeout):
        return TIMEOUT
    if isinstance(exc, GatewayUnreachable | BackendUnavailable):
        return UNREACHABLE
    if isinstance(exc, APIError):
        return REJECTED
    if isinstance(exc, ConfigError):
        return CONFIG
    return FAILED
