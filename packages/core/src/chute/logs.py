"""JSON-lines logging for chute's long-running processes (gateway, dequeuer, ``chute dev``).

Each record is one JSON object per line with ``ts``, ``level``, ``logger``, ``message`` and any
``extra={...}`` fields (``request_id``, ``api``, …), so log shippers can index them as Cortex's
Fluent Bit setup did. ``CHUTE_LOG_FORMAT=text`` switches to plain lines for humans.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import msgspec

# Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Values msgspec cannot encode (exceptions, paths) are logged by their repr.
_encoder = msgspec.json.Encoder(enc_hook=repr)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record got from ``extra={...}`` (``request_id``, ``api``, …)."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """Plain lines for humans (``chute dev`` uses it), the ``extra`` fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        fields = "".join(f" {key}={value}" for key, value in extra_fields(record).items())
        return super().formatMessage(record) + fields


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


def configure_logging(level: str | None = None) -> None:
    """Send every logger's records to stderr, as JSON lines unless CHUTE_LOG_FORMAT=text."""
    level = (level or os.environ.get("CHUTE_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("CHUTE_LOG_FORMAT", "json").lower() == "text":
        handler.setFormatter(TextFormatter())
    else:
        handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Neither format prints where a call was made, nor thread or process names: spare every
    # record the stack walk and lookups (the logging HOWTO's "Optimization"); the dequeuer logs
    # each request, and the walk was a sixth of a record's cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
