"""The SQLite file shared by the embedded queue and store: URL parsing, the schema, and one
connection per object whose blocking calls run in a worker thread.

Several processes (the gateway and the dequeuer) open the same file: WAL mode lets readers and
one writer work at the same time, ``busy_timeout`` makes a second writer wait instead of
failing, and every write is one short ``BEGIN IMMEDIATE`` transaction (taking the write lock up
front, so two writers never deadlock upgrading a read lock).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread

from chute.backends.urls import Option, parse_options, size
from chute.errors import BackendError, BackendUnavailable, ConfigError

_T = TypeVar("_T")

#: Query parameters an ``sqlite://`` URL may carry (the queue and the store share the URL).
QUERY_PARAMETERS: Final[dict[str, Option[Any]]] = {
    "max_payload_size": Option(
        "largest payload the store accepts, in bytes or as 16Mi (default: no limit of the "
        "store's own)",
        size(),
    ),
}

#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    api         TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    visible_at  REAL    NOT NULL,
    leased      INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    receipt     TEXT,
    sent_at     REAL    NOT NULL
);
-- receive scans visible messages in order; depth counts leased ones past now: both use it.
CREATE INDEX IF NOT EXISTS queue_messages_visible
    ON queue_messages (api, visible_at, leased);

CREATE TABLE IF NOT EXISTS queue_dead (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    api         TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    dead_at     REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_dead_api ON queue_dead (api, id);

CREATE TABLE IF NOT EXISTS store_records (
    api         TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    record      BLOB    NOT NULL,
    version     INTEGER NOT NULL,
    expires_at  REAL    NOT NULL,
    upload      TEXT    NOT NULL,
    chunks      INTEGER NOT NULL,
    result      BLOB,
    -- Copies of the record's fields that listing filters and orders by (see _migrate).
    created_at  REAL    NOT NULL DEFAULT 0,
    status      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (api, id)
);
CREATE INDEX IF NOT EXISTS store_records_expiry ON store_records (expires_at);
CREATE INDEX IF NOT EXISTS store_records_upload ON store_records (upload);

-- Payload chunks belong to an upload (a random key), not to the request id, so that a losing
-- concurrent create of the same id can clean up its own chunks without touching the winner's.
CREATE TABLE IF NOT EXISTS store_chunks (
    upload      TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    data        BLOB    NOT NULL,
    created_at  REAL    NOT NULL,
    PRIMARY KEY (upload, seq)
);
CREATE INDEX IF NOT EXISTS store_chunks_created ON store_chunks (created_at);
"""


def parse_url(url: str) -> tuple[Path, dict[str, Any]]:
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` → an absolute path
    (resolved now, so a later ``chdir`` changes nothing) and the query options present, typed
    (:data:`QUERY_PARAMETERS`; an unknown or repeated option is a ConfigError)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigError(f"not an SQLite URL: {url!r}")
    if parts.netloc:
        raise ConfigError(
            f"SQLite URL {url!r} names a host ({parts.netloc!r}); use sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    raw = unquote(parts.path)[1:]  # drop the slash that separates the (empty) host
    if not raw or raw.endswith("/") or raw == ":memory:":
        raise ConfigError(
            f"SQLite URL {url!r} must name a database file (an in-memory database cannot be "
            "shared between the gateway and the dequeuer)"
        )
    options = parse_options(url, QUERY_PARAMETERS, label="SQLite URL")
    return Path(raw).expanduser().absolute(), options


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions, each write says BEGIN IMMEDIATE itself.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        # After a checkpoint, shrink the WAL a big upload grew instead of keeping it forever.
        conn.execute(f"PRAGMA journal_size_limit = {64 * 1024 * 1024}")
        conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}")
        _migrate(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


#: Listing (``SqliteStore.list_requests``): an API's records newest first, all or by status.
_LISTING_INDEXES = """
CREATE INDEX IF NOT EXISTS store_records_listing ON store_records (api, created_at, id);
CREATE INDEX IF NOT EXISTS store_records_by_status
    ON store_records (api, status, created_at, id);
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file made by an older chute up to this schema, inside the opening transaction:
    ``store_records`` gained ``created_at`` and ``status`` (for listing), filled in from each
    stored record's JSON. Idempotent; a no-op on a file made by this version."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(store_records)")}
    if "status" not in columns:
        conn.execute("ALTER TABLE store_records ADD COLUMN created_at REAL NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE store_records ADD COLUMN status TEXT NOT NULL DEFAULT ''")
        conn.execute(
            "UPDATE store_records SET "
            "created_at = json_extract(CAST(record AS TEXT), '$.created_at'), "
            "status = json_extract(CAST(record AS TEXT), '$.status')"
        )
    for statement in _LISTING_INDEXES.split(";"):
        if statement.strip():
            conn.execute(statement)


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL needs an exclusive lock and SQLite reports "locked" at once,
    # without its busy handler, when another process is opening the same new file: retry.
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
            continue
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL mode here (journal mode {mode})")
        return


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that holds the file's write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection (any process) commits to the file; cheap."""
    row = conn.execute("PRAGMA data_version").fetchone()
    return int(row[0])


class Database:
    """One SQLite connection, opened on first use, used by one task at a time from a worker
    thread so that the event loop never blocks on disk or on another process's lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path, self.options = parse_url(url)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock = anyio.Lock()

    async def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(connection)`` in a worker thread, translating sqlite3 errors to chute's."""
        async with self._lock:
            return await anyio.to_thread.run_sync(self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise BackendError(f"the SQLite backend at {self.path} is closed")
        try:
            if self._conn is None:
                self._conn = _connect(self.path)
            return fn(self._conn)
        except sqlite3.OperationalError as exc:
            # cannot open, locked past busy_timeout, disk I/O: the file is not usable now.
            raise BackendUnavailable(f"SQLite database {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite database {self.path}: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailable(f"SQLite database {self.path}: {exc}") from exc
        finally:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.rollback()

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await anyio.to_thread.run_sync(conn.close)
