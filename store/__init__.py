"""The event log: an append-only store of events with gapless global positions.

:class:`MemoryStore` is the reference model; :class:`SQLiteStore` keeps the log in a SQLite
file. Both satisfy the :class:`EventStore` protocol, and :meth:`EventStore.replay` folds the
log into any :class:`Projection`.
"""

from __future__ import annotations

from routeledger.store._base import EventStore, Projection, StoredEvent
from routeledger.store._gaps import forget_gaps, gaps_path, save_gap, take_gaps
from routeledger.store._mapper import EventNotStorable, EventRow, event_to_row, row_to_event
from routeledger.store._memory import MemoryStore
from routeledger.store._schema import SCHEMA_VERSION
from routeledger.store._sqlite import SQLiteStore, open_store

__all__ = [
    "SCHEMA_VERSION",
    "EventNotStorable",
    "EventRow",
    "EventStore",
    "MemoryStore",
    "Projection",
    "SQLiteStore",
    "StoredEvent",
    "event_to_row",
    "forget_gaps",
    "gaps_path",
    "open_store",
    "row_to_event",
    "save_gap",
    "take_gaps",
]
