"""Replay an event log (a file or a ``postgresql://`` URL) into fresh projections."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from routeledger.events import Projections, StoreError

__all__ = ["open_readonly", "replay"]

if TYPE_CHECKING:
    from routeledger.store import PostgresStore, SQLiteStore


def open_readonly(path: str | os.PathLike[str]) -> SQLiteStore | PostgresStore:
    """Open an existing event log read-only: a SQLite file, or a ``postgresql://`` URL.

    Any schema version this routeledger knows is read as it is (an older log is not migrated),
    and the log may sit in a read-only directory or on a read-only filesystem.

    Raises:
        StoreError: the file is missing or is not a readable event log.
    """
    # sqlite, psycopg and the store stay off the import path
    from routeledger.store import PostgresStore, SQLiteStore, is_postgres_url

    if is_postgres_url(path):
        assert isinstance(path, str)
        return PostgresStore(path, readonly=True)

    file = Path(path)
    if not file.is_file():
        raise StoreError(f"no event log at {str(file)!r}", path=str(file))
    return SQLiteStore(file, readonly=True)


def replay(
    path: str | os.PathLike[str], *, strict: bool = True, snapshots: bool = True
) -> Projections:
    """Fold the whole event log at ``path`` into new projections and return them.

    The file is opened read-only (a running writer may keep appending; the replay stops at the
    position that was last when it started reading) and streamed, so memory stays bounded
    whatever the log's length. The result equals the live projections of the runtime that
    wrote the log, up to the same position.

    Args:
        path: the SQLite event log, or a ``postgresql://`` URL.
        strict: raise on an event type this version does not know; with ``False`` such
            events are skipped (and counted by the store), never silently.
        snapshots: start from the newest valid snapshot stored in the file and fold only
            the events after it (the same figures, sooner); ``False`` folds from position 1.
            A snapshot that fails a check is ignored (logged at WARNING), never trusted.

    Raises:
        StoreError: the file is missing or is not a readable event log.
        UnknownEventType: ``strict`` and the log holds an event of an unknown type.
    """
    from routeledger.store import load_snapshot

    store = open_readonly(path)
    try:
        start = (load_snapshot(store) if snapshots else None) or Projections()
        projections = store.replay(start, from_position=start.position + 1, strict=strict)
        projections.skipped_unknown = store.skipped_unknown
        return projections
    finally:
        store.close()
