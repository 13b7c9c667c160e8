"""Projection snapshots: the fold state at one position, kept in the log's own database.

A runtime started on a long log, and ``replay()``, would fold every event from position 1.
A snapshot stores what the projections hold after position ``P`` (``ProjectionsState``,
msgpack-encoded), so that a start folds only the events after ``P``. The log stays the
source of truth: a snapshot is a cache of a fold of it, and it is never trusted over it.
One is used only when every check passes, and otherwise ignored (one WARNING per load) and
the fold starts from an older valid snapshot or from position 1:

- ``format`` equals :data:`SNAPSHOT_FORMAT` (the row's layout, encoding and checksum);
- ``code`` equals :func:`code_identity` (the fold code that wrote it, see below);
- ``checksum`` (SHA-256 of every other column) matches: the row is the one written;
- ``anchor`` (SHA-256 of the stored event at ``P``) matches the log's row at ``P``: the
  snapshot belongs to this log, which still holds that many events;
- the state decodes and is sound.

Only a fold that saw every position from 1 to ``P`` is stored (``Projections.contiguous``):
a log with a damaged or unknown row before ``P``, or another writer's events the live fold
never saw, gets no snapshot of that stretch.

The code identity, and when to bump it: ``f"{STATE_VERSION}-{schema digest}"``. The schema
digest is taken from ``ProjectionsState``'s JSON schema, so a change in the state's layout
(a field added, renamed or retyped, in the state or in an event it holds) changes the
identity by itself. A change in what a fold *does* with an event (a new event type counted,
another rounding, another EWMA weight) leaves the layout alone: such a change must bump
:data:`STATE_VERSION`. ``tests/test_snapshots.py`` pins a digest of the fold modules' source
next to :data:`STATE_VERSION` and fails when the former changes alone, to ask the question.

The table (created with ``CREATE TABLE IF NOT EXISTS`` by the first write, so the event log's
schema version is not involved)::

    CREATE TABLE snapshots (
        position INTEGER PRIMARY KEY,   -- the last event position the state covers
        format   INTEGER NOT NULL,      -- SNAPSHOT_FORMAT
        code     TEXT NOT NULL,         -- code_identity()
        anchor   TEXT NOT NULL,         -- sha256 hex of the stored event at position
        checksum TEXT NOT NULL,         -- sha256 hex of the other columns
        state    BLOB NOT NULL          -- msgpack of ProjectionsState
    );

Only the newest :data:`KEEP` snapshots are kept: each write deletes older ones, and any that
claims a position beyond the one written (it cannot be of this log), in its own transaction,
so the table stays small and a crash mid-write leaves the previous one intact.
:class:`~routeledger.store.SQLiteStore` and :class:`~routeledger.store.PostgresStore` keep
snapshots (PostgreSQL: in ``routeledger_snapshots``, the same columns, ``state`` a bytea, its
row written and pruned in one transaction by the store's own methods); for any other store
writing is a no-op and reading finds none.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import sqlite3
from typing import NamedTuple

import msgspec

from routeledger.events import Projections, ProjectionsState
from routeledger.store._base import EventStore
from routeledger.store._postgres import PostgresStore
from routeledger.store._sqlerrors import translate
from routeledger.store._sqlite import SQLiteStore

__all__ = [
    "KEEP",
    "SNAPSHOT_FORMAT",
    "STATE_VERSION",
    "StoredSnapshot",
    "code_identity",
    "load_snapshot",
    "read_snapshots",
    "write_snapshot",
]

log = logging.getLogger("routeledger")

SNAPSHOT_FORMAT = 1
"""The version of the snapshot row: its columns, the state's encoding and the checksum."""
STATE_VERSION = 1
"""The version of the folds' meaning: bump it when a fold treats an event differently."""
KEEP = 2
"""How many snapshots a log keeps (the newest ones)."""

_TABLE = "snapshots"
_CREATE_SQL = f"""
    CREATE TABLE IF NOT EXISTS {_TABLE} (
        position INTEGER PRIMARY KEY,
        format   INTEGER NOT NULL,
        code     TEXT NOT NULL,
        anchor   TEXT NOT NULL,
        checksum TEXT NOT NULL,
        state    BLOB NOT NULL
    )
"""
_INSERT_SQL = (
    f"INSERT OR REPLACE INTO {_TABLE} (position, format, code, anchor, checksum, state) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_PRUNE_SQL = (
    f"DELETE FROM {_TABLE} WHERE position NOT IN "
    f"(SELECT position FROM {_TABLE} WHERE position <= ? ORDER BY position DESC LIMIT ?)"
)
_EXISTS_SQL = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
_SELECT_SQL = (
    f"SELECT position, format, code, anchor, checksum, state FROM {_TABLE} ORDER BY position DESC"
)
_EVENT_SQL = "SELECT data FROM events WHERE position = ?"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ProjectionsState)


class StoredSnapshot(NamedTuple):
    """One row of the ``snapshots`` table, as read: not checked, so of any SQLite type."""

    position: int
    format: object
    code: object
    anchor: object
    checksum: object
    state: object


@functools.cache
def code_identity() -> str:
    """Return the identity of the fold code a snapshot must have been written by."""
    schema = msgspec.json.encode(msgspec.json.schema(ProjectionsState))
    return f"{STATE_VERSION}-{hashlib.sha256(schema).hexdigest()[:16]}"


def _checksum(fmt: int, code: str, position: int, anchor: str, state: bytes) -> str:
    digest = hashlib.sha256(f"{fmt}\0{code}\0{position}\0{anchor}\0".encode())
    digest.update(state)
    return digest.hexdigest()


def _anchor(data: object) -> str:
    # An event's data is a BLOB in schema v1 and may be TEXT later: the same UTF-8 JSON.
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data if isinstance(data, bytes) else repr(data).encode()).hexdigest()


def write_snapshot(store: EventStore, projections: Projections) -> bool:
    """Store a snapshot of ``projections`` at their position; return whether one was written.

    Nothing is written for a store other than :class:`SQLiteStore`, for projections that did
    not fold every position up to theirs (``contiguous``), or at position 0. The state is
    encoded before the write lock is taken; the row is inserted and older ones pruned in one
    transaction.

    Raises:
        StoreError: the write failed; the table is as it was.
    """
    position = projections.position
    if not isinstance(store, SQLiteStore | PostgresStore):
        return False
    if not projections.contiguous or position < 1:
        return False
    state = _encoder.encode(projections.state())
    code = code_identity()
    if isinstance(store, PostgresStore):

        def build(anchored: object) -> tuple[int, int, str, str, str, bytes]:
            anchor = _anchor(anchored)
            checksum = _checksum(SNAPSHOT_FORMAT, code, position, anchor, state)
            return (position, SNAPSHOT_FORMAT, code, anchor, checksum, state)

        return store.put_snapshot(position, build, keep=KEEP)
    with store._write_lock:
        writer = store._writer_connection()
        try:
            writer.execute("BEGIN IMMEDIATE")
            try:
                writer.execute(_CREATE_SQL)
                row = writer.execute(_EVENT_SQL, (position,)).fetchone()
                if row is None:  # the fold ran ahead of the log: never store such a state
                    writer.execute("ROLLBACK")
                    return False
                anchor = _anchor(row[0])
                checksum = _checksum(SNAPSHOT_FORMAT, code, position, anchor, state)
                writer.execute(
                    _INSERT_SQL, (position, SNAPSHOT_FORMAT, code, anchor, checksum, state)
                )
                writer.execute(_PRUNE_SQL, (position, KEEP))
                _commit(writer)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    if writer.in_transaction:
                        writer.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise translate(exc, path=store.path, action=f"snapshot at {position}") from exc
    return True


def _commit(writer: sqlite3.Connection) -> None:
    # A seam of its own so that a test can stop a process inside the snapshot transaction.
    writer.execute("COMMIT")


def read_snapshots(store: EventStore) -> list[StoredSnapshot]:
    """Return the stored snapshots, newest first, unchecked (none for other stores).

    Raises:
        StoreError: the table cannot be read.
    """
    if isinstance(store, PostgresStore):
        return [StoredSnapshot(int(r[0]), *r[1:]) for r in store.snapshot_rows()]
    if not isinstance(store, SQLiteStore):
        return []
    reader = store._acquire_reader()
    try:
        if reader.execute(_EXISTS_SQL, (_TABLE,)).fetchone() is None:
            return []
        return [
            StoredSnapshot(int(r[0]), r[1], r[2], r[3], r[4], r[5])
            for r in reader.execute(_SELECT_SQL).fetchall()
        ]
    except sqlite3.Error as exc:
        raise translate(exc, path=store.path, action="read snapshots") from exc
    finally:
        store._release_reader(reader)


def load_snapshot(store: EventStore) -> Projections | None:
    """Return projections restored from the newest valid snapshot, or ``None``.

    Every snapshot newer than the one used (or every one, when none is valid) is ignored, and
    the reasons are logged together in one WARNING. The result's ``snapshot_position`` is the
    snapshot's position.
    """
    try:
        rows = read_snapshots(store)
    except Exception as exc:  # a snapshot is an optimisation: never a reason not to start
        log.warning("event log: snapshots unreadable (%s); folding from position 1", exc)
        return None
    ignored: list[str] = []
    found: Projections | None = None
    for row in rows:
        try:
            reason = _check(store, row)
            if reason is None:
                assert isinstance(row.state, bytes)  # _check made sure
                restored = Projections.from_state(_decoder.decode(row.state))
                if restored.position == row.position:
                    restored.snapshot_position = row.position
                    found = restored
                    break
                reason = f"holds position {restored.position}"
        except Exception as exc:  # anything that does not decode is not trusted, whatever
            reason = f"does not decode ({type(exc).__name__}: {exc})"
        ignored.append(f"position {row.position}: {reason}")
    if ignored:
        start = 1 if found is None else found.position + 1
        log.warning(
            "event log %s: snapshot(s) ignored, folding from position %d: %s",
            getattr(store, "path", ""),
            start,
            "; ".join(ignored),
        )
    return found


def _check(store: EventStore, row: StoredSnapshot) -> str | None:
    """Return why ``row`` cannot be trusted, or ``None`` when every check passes."""
    if row.format != SNAPSHOT_FORMAT:
        return f"format {row.format!r}, this routeledger reads {SNAPSHOT_FORMAT}"
    code = code_identity()
    if row.code != code:
        return f"written by other fold code ({row.code!r}, this is {code!r})"
    if not isinstance(row.state, bytes) or not isinstance(row.anchor, str):
        return "malformed row"
    if _checksum(SNAPSHOT_FORMAT, code, row.position, row.anchor, row.state) != row.checksum:
        return "bad checksum"
    if isinstance(store, PostgresStore):
        data = store.event_data(row.position)
        event = None if data is None else (data,)
    else:
        assert isinstance(store, SQLiteStore)  # read_snapshots reads no other store
        reader = store._acquire_reader()
        try:
            event = reader.execute(_EVENT_SQL, (row.position,)).fetchone()
        finally:
            store._release_reader(reader)
    if event is None:
        return f"the log holds no event at {row.position}"
    if _anchor(event[0]) != row.anchor:
        return "the log's event at its position is not the one it was taken after"
    return None
