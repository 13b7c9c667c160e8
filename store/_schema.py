"""The SQLite schema of the event log: creation, migration, version check and inspection.

The schema version lives in ``PRAGMA user_version``. Version 0 with no tables is a new file;
a version above :data:`SCHEMA_VERSION` was written by a newer routeledger and is refused
before anything is written to it. sqlite-utils inspects the tables.

Schema version 2::

    CREATE TABLE events (
        position   INTEGER PRIMARY KEY,   -- gapless global position, assigned on append
        type       TEXT NOT NULL,         -- wire tag
        ts         REAL NOT NULL,         -- event time, Unix seconds
        request_id TEXT,                  -- NULL for events of no request
        data       TEXT NOT NULL          -- the encoded event (UTF-8 JSON)
    );
    CREATE INDEX events_request_id ON events (request_id);

Version 1 differed in one thing: ``data`` was a BLOB (the same UTF-8 JSON bytes). Tools took
it for binary data (datasette shows "binary data", and SQLite 3.45+ reads a BLOB given to
``json_extract`` as JSONB), so version 2 stores it as TEXT. A writer that opens a version 1
file migrates it (:func:`upgrade_schema`); readers read either version as it is.

Other tables may sit beside ``events`` in a versioned file (for example projection
snapshots): the check looks at ``events`` only.
"""

from __future__ import annotations

import contextlib
import sqlite3

import sqlite_utils

from routeledger.events import SchemaVersionError, StoreCorrupted, StoreError

__all__ = ["SCHEMA_VERSION", "read_version", "upgrade_schema", "verify_schema"]

SCHEMA_VERSION = 2
"""The version of the event log's schema this routeledger writes (it reads 1 and 2)."""

_TABLE = "events"
_INDEX = "events_request_id"
_COLUMNS_V1: dict[str, type] = {
    "position": int,
    "type": str,
    "ts": float,
    "request_id": str,
    "data": bytes,
}
_COLUMNS: dict[int, dict[str, type]] = {1: _COLUMNS_V1, 2: {**_COLUMNS_V1, "data": str}}
"""The columns of ``events`` (as sqlite-utils names their types) in each schema version."""

_CREATE_TABLE = """
    CREATE TABLE {table} (
        position   INTEGER PRIMARY KEY,
        type       TEXT NOT NULL,
        ts         REAL NOT NULL,
        request_id TEXT,
        data       TEXT NOT NULL
    )
"""
_CREATE_INDEX = f"CREATE INDEX {_INDEX} ON {_TABLE} (request_id)"

_MIGRATION_1_TO_2: tuple[str, ...] = (
    # SQLite cannot change a column's declared type in place, so the table is rebuilt. CAST
    # keeps every byte: a BLOB becomes TEXT of the same bytes (the JSON was UTF-8 already),
    # so a v1 row and its v2 row hash alike.
    _CREATE_TABLE.format(table="events_v2"),
    f"""INSERT INTO events_v2 (position, type, ts, request_id, data)
        SELECT position, type, ts, request_id, CAST(data AS TEXT) FROM {_TABLE}
        ORDER BY position""",
    f"DROP TABLE {_TABLE}",  # drops its index too
    f"ALTER TABLE events_v2 RENAME TO {_TABLE}",
    _CREATE_INDEX,
)
"""The statements that turn a version 1 file into version 2, run in one transaction."""


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

    Tables other than ``events`` are allowed in a versioned file (they belong to other parts
    of the store, such as snapshots); a version 0 file must have none.

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
    expected = _COLUMNS.get(version)
    if columns != expected:
        raise StoreCorrupted(
            f"{path}: the {_TABLE!r} table of schema version {version} has columns {columns}, "
            f"expected {expected}",
            path=path,
        )


def upgrade_schema(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file to :data:`SCHEMA_VERSION`: create the schema, or migrate version 1.

    Runs in one ``BEGIN IMMEDIATE`` transaction, so that two processes opening the file at
    once do not both do the work (the loser sees the winner's version and returns), and so
    that a failure or a crash half-way leaves the file as it was: a migration rewrites every
    row and sets the version, or does nothing.

    Raises:
        SchemaVersionError: a newer routeledger initialised the file meanwhile.
        StoreError: the file became something that is not an event log meanwhile.
        sqlite3.Error: left to the caller, which translates it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have upgraded it meanwhile.
        version = read_version(conn, path)
        if version != SCHEMA_VERSION:
            verify_schema(conn, path, version)
            # Plain DDL, not sqlite-utils' create(): that commits on its own, and another
            # process would then see the table without its version and take the file for a
            # foreign one.
            if version == 0:
                conn.execute(_CREATE_TABLE.format(table=_TABLE))
                conn.execute(_CREATE_INDEX)
            else:
                for statement in _MIGRATION_1_TO_2:
                    conn.execute(statement)
            # PRAGMA cannot take parameters; SCHEMA_VERSION is our own int constant.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
        conn.execute("COMMIT")
    except BaseException:
        # Keep the original error: a failed rollback adds nothing to it.
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise
