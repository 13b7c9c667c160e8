"""The SQLite schema of the event log: creation, version check and inspection (sqlite-utils).

The schema version lives in ``PRAGMA user_version``. Version 0 with no tables is a new file;
a version above :data:`SCHEMA_VERSION` was written by a newer routeledger and is refused
before anything is written to it.

Schema version 1::

    CREATE TABLE events (
        position   INTEGER PRIMARY KEY,   -- gapless global position, assigned on append
        type       TEXT NOT NULL,         -- wire tag
        ts         REAL NOT NULL,         -- event time, Unix seconds
        request_id TEXT,                  -- NULL for events of no request
        data       BLOB NOT NULL          -- the encoded event (JSON)
    );
    CREATE INDEX events_request_id ON events (request_id);
"""

from __future__ import annotations

import contextlib
import sqlite3

import sqlite_utils

from routeledger.events import SchemaVersionError, StoreCorrupted, StoreError

__all__ = ["SCHEMA_VERSION", "create_schema", "read_version", "verify_schema"]

SCHEMA_VERSION = 1
"""The version of the event log's schema this routeledger writes and reads."""

_TABLE = "events"
_INDEX = "events_request_id"
_COLUMNS: dict[str, type] = {
    "position": int,
    "type": str,
    "ts": float,
    "request_id": str,
    "data": bytes,
}


_CREATE_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {_TABLE} (
        position   INTEGER PRIMARY KEY,
        type       TEXT NOT NULL,
        ts         REAL NOT NULL,
        request_id TEXT,
        data       BLOB NOT NULL
    )
"""
_CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {_INDEX} ON {_TABLE} (request_id)"


def read_version(conn: sqlite3.Connection, path: str) -> int:
    """Return the file's schema version, refusing one written by a newer routeledger.

    Reading the version is the first thing done with a file: it also proves that the file
    is a SQLite database (sqlite3 raises SQLITE_NOTADB otherwise).

    Raises:
        SchemaVersionError: the version is newer than :data:`SCHEMA_VERSION`.
        sqlite3.Error: left to the caller, which translates it.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has schema version {version}, newer than {SCHEMA_VERSION} (the newest "
            "this routeledger knows); it was written by a newer routeledger: upgrade to open it",
            path=path,
        )
    return version


def verify_schema(conn: sqlite3.Connection, path: str, version: int) -> None:
    """Check that a file of schema ``version`` holds what that version says.

    Raises:
        StoreError: version 0 but the file has tables (not a routeledger event log).
        StoreCorrupted: the ``events`` table is missing or has other columns.
    """
    db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
    tables = db.table_names()
    if version == 0:
        if tables:
            raise StoreError(
                f"{path} is a SQLite database but not a routeledger event log "
                f"(no schema version, tables: {', '.join(sorted(tables))})",
                path=path,
            )
        return
    if _TABLE not in tables:
        raise StoreCorrupted(
            f"{path} says schema version {version} but has no {_TABLE!r} table", path=path
        )
    columns = db.table(_TABLE).columns_dict
    if columns != _COLUMNS:
        raise StoreCorrupted(
            f"{path}: the {_TABLE!r} table has columns {columns}, expected {_COLUMNS}",
            path=path,
        )


def create_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new file, unless another connection just did.

    Runs in its own ``BEGIN IMMEDIATE`` transaction so that two processes opening a new file
    at once do not both create it: the loser sees the winner's version and returns.

    Raises:
        SchemaVersionError: a newer routeledger initialised the file meanwhile.
        sqlite3.Error: left to the caller, which translates it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if read_version(conn, path) == SCHEMA_VERSION:
            conn.execute("COMMIT")
            return
        # Plain DDL, not sqlite-utils' create(): that commits on its own, and another process
        # would then see the table without its version and take the file for a foreign one.
        conn.execute(_CREATE_TABLE)
        conn.execute(_CREATE_INDEX)
        # PRAGMA cannot take parameters; SCHEMA_VERSION is our own int constant.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        conn.execute("COMMIT")
    except BaseException:
        # Keep the original error: a failed rollback adds nothing to it.
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise
