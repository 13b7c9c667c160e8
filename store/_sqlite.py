"""The SQLite event store: the event log as a file database.

sqlite-utils creates and inspects the schema (see ``_schema``); the hot path (append and
read) uses the raw ``sqlite3`` connection. Every ``sqlite3`` error is translated into the
store's error family (see ``_sqlerrors``).

A writer opens a file it can write, or not at all: a read-only file, directory or filesystem
is refused when the store opens, not at the first append. A reader opens a log it may not
write to, even on a read-only filesystem (see :meth:`SQLiteStore._open`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from routeledger.events import StoreError
from routeledger.store._base import EventStore, StoredEvent, check_limit
from routeledger.store._mapper import EventRow, decode_rows, events_to_rows
from routeledger.store._schema import SCHEMA_VERSION, read_version, upgrade_schema, verify_schema
from routeledger.store._sqlerrors import translate

if TYPE_CHECKING:
    from routeledger.events import Event

__all__ = ["SQLiteStore", "open_store"]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_FETCH_SIZE = 1000
"""Rows per ``fetchmany``: large enough to amortise the call, small enough to stay bounded."""
_MAX_IDLE_READERS = 4

_LAST_SQL = "SELECT COALESCE(MAX(position), 0) FROM events"
_INSERT_SQL = "INSERT INTO events (position, type, ts, request_id, data) VALUES (?, ?, ?, ?, ?)"
# Reads take the data as bytes whatever its storage class (TEXT in schema 2, BLOB in 1): the
# cast costs nothing, sqlite3 skips building a str that msgspec would read back, and a row that
# is not valid UTF-8 reaches the decoder, which names its position, instead of failing the
# whole fetch inside sqlite3.
_READ_SQL = "SELECT position, CAST(data AS BLOB) FROM events WHERE position >= ? ORDER BY position"
_REQUEST_SQL = (
    "SELECT position, CAST(data AS BLOB) FROM events WHERE request_id = ? ORDER BY position"
)
_SQLITE_READONLY = 8
_SQLITE_CANTOPEN = 14


class SQLiteStore(EventStore):
    """Keep the event log in a SQLite file (WAL mode), safe across threads and processes.

    Positions are gapless across processes: an append takes the database's write lock with
    ``BEGIN IMMEDIATE``, numbers its rows from ``MAX(position) + 1`` inside that transaction,
    and returns the positions only after ``COMMIT``. A batch that is rolled back returns no
    positions, so no caller ever holds a position that a later batch reuses.

    Threads: one writer connection, guarded by a lock, serves every append (SQLite has one
    writer at a time anyway). Reads use a small pool of read-only connections, one per
    running iterator, so a read in progress (WAL: a stable snapshot) never blocks an append
    and an append in another thread never shows up half-way through a read. ``close`` closes
    every connection; an iterator still running afterwards raises ``StoreError``.

    Versions: a writer migrates a file of schema version 1 to the current version when it
    opens it (one transaction); a read-only store reads either version as it is.

    Args:
        path: the database file (created if missing, unless ``readonly``).
        synchronous: ``PRAGMA synchronous`` (``OFF``, ``NORMAL``, ``FULL``, ``EXTRA``).
            ``NORMAL`` in WAL mode loses at most the last commits on power loss, never
            consistency.
        busy_timeout_s: how long to wait for another connection's write lock before
            raising ``StoreLocked``.
        readonly: open the file read-only; ``append`` raises ``StoreError``.
        max_size_bytes: cap the file size (``PRAGMA max_page_count``); an append that
            would exceed it raises ``StoreFull`` and writes nothing.

    Raises:
        SchemaVersionError: the file was written by a newer routeledger (nothing written).
        StoreCorrupted: the file is not a SQLite database, or not a sound event log.
        StoreError: the file cannot be opened (for a writer: cannot be written), or is a
            SQLite database of something else.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        readonly: bool = False,
        max_size_bytes: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise ValueError(
                f"SQLiteStore needs a file path, got {self.path!r} (use MemoryStore in memory)"
            )
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
        if busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {busy_timeout_s}")
        if max_size_bytes is not None and max_size_bytes <= 0:
            raise ValueError(f"max_size_bytes must be positive, got {max_size_bytes}")
        self.readonly = readonly
        self.skipped_unknown = 0
        self._synchronous = synchronous.upper()
        self._busy_timeout_s = busy_timeout_s
        self._max_size_bytes = max_size_bytes
        # Re-entrant: a read iterator's cleanup (which takes this lock) may run from garbage
        # collection while this thread already holds it.
        self._lock = threading.RLock()
        """Guards the connection sets, the closed flag and the skip counter."""
        self._write_lock = threading.Lock()
        """Serialises appends on the one writer connection."""
        self._connections: set[sqlite3.Connection] = set()
        self._idle_readers: list[sqlite3.Connection] = []
        self._writer: sqlite3.Connection | None = None
        self._closed = False
        self._immutable = False
        """Read-only connections open the file as immutable (see ``_open``)."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"SQLiteStore({self.path!r}{mode})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the contract -----------------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append a batch atomically and return its gapless positions."""
        # Encode before taking any lock: a bad event fails the batch before it is begun, and
        # the write lock is held only for the insert itself.
        rows = events_to_rows(events)
        with self._write_lock:
            writer = self._writer_connection()
            if not rows:
                return []
            try:
                first = self._insert(writer, rows)
            except sqlite3.Error as exc:
                raise translate(
                    exc, path=self.path, action=f"append of {len(rows)} event(s)"
                ) from exc
        return list(range(first, first + len(rows)))

    def read(
        self, from_position: int = 1, *, limit: int | None = None, strict: bool = True
    ) -> Iterator[StoredEvent]:
        """Yield stored events in position order, starting at ``from_position``."""
        check_limit(limit)
        self._check_open()
        return self._stream(_READ_SQL, (from_position,), limit=limit, strict=strict, action="read")

    def read_request(self, request_id: str, *, strict: bool = True) -> Iterator[StoredEvent]:
        """Yield, in position order, the events of one request (uses the request_id index)."""
        self._check_open()
        return self._stream(
            _REQUEST_SQL, (request_id,), limit=None, strict=strict, action="read_request"
        )

    def last_position(self) -> int:
        """Return the last committed position, 0 when empty."""
        reader = self._acquire_reader()
        try:
            (last,) = reader.execute(_LAST_SQL).fetchone()
        except sqlite3.Error as exc:
            raise translate(exc, path=self.path, action="last_position") from exc
        finally:
            self._release_reader(reader)
        return int(last)

    def close(self) -> None:
        """Close every connection; later calls raise ``StoreError``. Idempotent."""
        # The write lock lets an append in progress finish (commit or roll back) first.
        with self._write_lock, self._lock:
            self._closed = True
            connections = list(self._connections)
            self._connections.clear()
            self._idle_readers.clear()
            self._writer = None
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    # --- opening ----------------------------------------------------------------------------

    def _open(self) -> None:
        if not self.readonly:
            self._open_writer()
            return
        try:
            self._open_reader()
        except sqlite3.Error as exc:
            if not self._may_open_immutable(exc):
                raise translate(exc, path=self.path, action="open") from exc
            # A read-only open of a WAL file needs its -shm beside it (SQLite creates one to
            # coordinate with writers); in a read-only directory or on a read-only filesystem
            # it cannot. With no -wal file either, every committed transaction is in the main
            # file and no writer is connected (a WAL writer keeps its -wal while it is open,
            # and none could create one here), so the file is what SQLite calls immutable:
            # read without locks or a -shm. A writer that a read-only directory does not stop
            # (its owner) could start during the read; this fallback is for a log no one
            # writes, such as an archived copy or a log on a read-only mount.
            self._immutable = True
            try:
                self._open_reader()
            except sqlite3.Error as retry_exc:
                raise translate(retry_exc, path=self.path, action="open") from retry_exc

    def _open_reader(self) -> None:
        connection = self._connect()
        try:
            version = self._check_version(connection)
            if version == 0:
                raise StoreError(
                    f"{self.path} is not an initialised event log (and it was opened "
                    "read-only, so it cannot be initialised)",
                    path=self.path,
                )
            connection.execute("PRAGMA query_only = 1")
        except BaseException:
            self._discard(connection)
            raise
        self._idle_readers.append(connection)

    def _may_open_immutable(self, exc: sqlite3.Error) -> bool:
        """Return whether a read-only open that failed with ``exc`` may retry as immutable.

        Raises:
            StoreError: the open failed for want of a -shm, and the -wal holds commits that
                an immutable open would miss.
        """
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if self._immutable or primary not in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
            return False
        wal = pathlib.Path(self.path + "-wal")
        try:
            pending = wal.stat().st_size > 0
        except FileNotFoundError:
            return True
        except OSError:
            pending = True
        if pending:
            # Transactions committed to the -wal but not yet copied into the main file: an
            # immutable open would silently leave them out of every figure.
            raise StoreError(
                f"{self.path} has committed events in {wal.name}, which SQLite can read only "
                f"with a {pathlib.Path(self.path).name}-shm beside it, and this process cannot "
                "create one (read-only directory or filesystem): open the log once where it "
                "can be written, or copy the files to a writable directory",
                path=self.path,
            ) from exc
        return True

    def _open_writer(self) -> None:
        connection = self._connect()
        try:
            version = self._check_version(connection)
            self._enable_wal(connection)
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            if self._max_size_bytes is not None:
                (page_size,) = connection.execute("PRAGMA page_size").fetchone()
                pages = max(1, self._max_size_bytes // page_size)
                connection.execute(f"PRAGMA max_page_count = {pages:d}")
            if version < SCHEMA_VERSION:
                upgrade_schema(connection, self.path)
            _check_writable(connection)
        except sqlite3.Error as exc:
            raise translate(exc, path=self.path, action="open for writing") from exc
        self._writer = connection

    def _check_version(self, connection: sqlite3.Connection) -> int:
        # Nothing is written before the version check: a newer file stays untouched. The
        # version and the tables are read in one read transaction, so that another process
        # creating or migrating the schema right now is seen either wholly or not at all.
        connection.execute("BEGIN")
        try:
            version = read_version(connection, self.path)
            verify_schema(connection, self.path, version)
        finally:
            if connection.in_transaction:
                connection.execute("COMMIT")
        return version

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        # Switching a file to WAL takes an exclusive lock, and SQLite returns SQLITE_BUSY at
        # once, without calling the busy handler, when waiting could deadlock (another process
        # creating the same new file right now): retry for as long as the busy timeout allows.
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                busy = isinstance(code, int) and code & 0xFF == 5  # SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = pathlib.Path(self.path).absolute().as_uri() + "?mode=ro"
                if self._immutable:
                    uri += "&immutable=1"
                connection = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                connection = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
        except sqlite3.Error as exc:
            raise translate(exc, path=self.path, action="open") from exc
        with self._lock:
            if not self._closed:
                self._connections.add(connection)
                return connection
        connection.close()
        raise StoreError(f"the store {self.path} is closed", path=self.path)

    # --- connections ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.path} is closed", path=self.path)

    def _writer_connection(self) -> sqlite3.Connection:
        self._check_open()
        if self._writer is None:
            raise StoreError(
                f"the store {self.path} was opened read-only: append is refused", path=self.path
            )
        return self._writer

    def _acquire_reader(self) -> sqlite3.Connection:
        with self._lock:
            self._check_open()
            if self._idle_readers:
                return self._idle_readers.pop()
        connection = self._connect()
        try:
            # A reader must never write, whatever a caller does with it.
            connection.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            self._discard(connection)
            raise translate(exc, path=self.path, action="open a reader") from exc
        return connection

    def _release_reader(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if (
                not self._closed
                and len(self._idle_readers) < _MAX_IDLE_READERS
                and not connection.in_transaction
            ):
                self._idle_readers.append(connection)
                return
        self._discard(connection)

    def _discard(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            self._connections.discard(connection)
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    # --- the hot path -----------------------------------------------------------------------

    def _insert(self, writer: sqlite3.Connection, rows: list[EventRow]) -> int:
        writer.execute("BEGIN IMMEDIATE")
        try:
            (last,) = writer.execute(_LAST_SQL).fetchone()
            first = int(last) + 1
            writer.executemany(
                _INSERT_SQL, [(first + offset, *row) for offset, row in enumerate(rows)]
            )
            self._commit(writer)
        except BaseException:
            # Keep the original error: a failed rollback adds nothing to it. SQLITE_FULL
            # may already have rolled the transaction back.
            with contextlib.suppress(sqlite3.Error):
                if writer.in_transaction:
                    writer.execute("ROLLBACK")
            raise
        return first

    def _commit(self, writer: sqlite3.Connection) -> None:
        # A seam of its own so that a test can stop a process between insert and commit.
        writer.execute("COMMIT")

    def _stream(
        self,
        sql: str,
        parameters: tuple[object, ...],
        *,
        limit: int | None,
        strict: bool,
        action: str,
    ) -> Iterator[StoredEvent]:
        reader = self._acquire_reader()
        try:
            cursor = reader.execute(sql, parameters)
            try:
                size = _FETCH_SIZE if limit is None else max(1, min(limit, _FETCH_SIZE))
                yield from decode_rows(
                    _fetch(cursor, size), limit=limit, strict=strict, on_skip=self._count_skip
                )
            finally:
                with contextlib.suppress(sqlite3.Error):
                    cursor.close()
        except sqlite3.Error as exc:
            raise translate(exc, path=self.path, action=action) from exc
        finally:
            self._release_reader(reader)

    def _count_skip(self) -> None:
        with self._lock:
            self.skipped_unknown += 1


def _check_writable(connection: sqlite3.Connection) -> None:
    """Prove that ``connection`` can write, writing nothing.

    SQLite opens a file it may not write (read-only file, directory or filesystem) read-only
    without a word, and reports it only at the first write: a runtime would serve requests
    and fail at its first flush. A write inside a transaction that is rolled back finds out
    now. Setting ``user_version`` to its own value is the smallest write there is.

    Raises:
        sqlite3.Error: SQLITE_READONLY (or any other failure); the caller translates it.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        connection.execute(f"PRAGMA user_version = {int(version):d}")
    finally:
        with contextlib.suppress(sqlite3.Error):
            if connection.in_transaction:
                connection.execute("ROLLBACK")


def _fetch(cursor: sqlite3.Cursor, size: int) -> Iterator[tuple[int, object]]:
    while chunk := cursor.fetchmany(size):
        yield from chunk


def open_store(path: str | os.PathLike[str], *, readonly: bool = False) -> SQLiteStore:
    """Open (or create) the SQLite event log at ``path`` with the default settings."""
    return SQLiteStore(path, readonly=readonly)
