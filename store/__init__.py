"""The event log: an append-only store of events with gapless global positions.

:class:`MemoryStore` is the reference model; :class:`SQLiteStore` keeps the log in a SQLite
file, and :class:`PostgresStore` in a PostgreSQL database shared by several daemons (the
``postgres`` extra; :func:`open_store` picks one by path or URL). All satisfy the
:class:`EventStore` protocol, and :meth:`EventStore.replay` folds the log into any
:class:`Projection`. The log also keeps snapshots of the projections (:func:`write_snapshot`,
:func:`load_snapshot`), never trusted over the log.
"""

from __future__ import annotations

from routeledger.store._base import EventStore, Projection, StoredEvent
from routeledger.store._gaps import forget_gaps, gap_base, gaps_path, save_gap, take_gaps
from routeledger.store._mapper import EventNotStorable, EventRow, event_to_row, row_to_event
from routeledger.store._memory import MemoryStore
from routeledger.store._open import open_store, shown_target
from routeledger.store._postgres import PostgresStore, Slot, is_postgres_url
from routeledger.store._schema import SCHEMA_VERSION
from routeledger.store._snapshots import (
    SNAPSHOT_FORMAT,
    StoredSnapshot,
    load_snapshot,
    read_snapshots,
    write_snapshot,
)
from routeledger.store._sqlite import SQLiteStore

__all__ = [
    "SCHEMA_VERSION",
    "SNAPSHOT_FORMAT",
    "EventNotStorable",
    "EventRow",
    "EventStore",
    "MemoryStore",
    "PostgresStore",
    "Projection",
    "SQLiteStore",
    "Slot",
    "StoredEvent",
    "StoredSnapshot",
    "event_to_row",
    "forget_gaps",
    "gap_base",
    "gaps_path",
    "is_postgres_url",
    "load_snapshot",
    "open_store",
    "read_snapshots",
    "row_to_event",
    "save_gap",
    "shown_target",
    "take_gaps",
    "write_snapshot",
]
