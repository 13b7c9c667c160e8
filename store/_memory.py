"""The in-memory event store: the reference model every other store must match."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from routeledger.events import StoreError
from routeledger.store._base import EventStore, StoredEvent, check_limit
from routeledger.store._mapper import EventRow, decode_rows, events_to_rows

if TYPE_CHECKING:
    from routeledger.events import Event

__all__ = ["MemoryStore"]


class MemoryStore(EventStore):
    """Hold the event log in a list, for tests and short-lived runtimes.

    It stores the same rows as :class:`SQLiteStore` (through the same mapper), so it fails
    the same way on an event that cannot be stored, and reads return decoded copies, never
    the appended objects. Thread-safe: one lock guards appends; a read takes a snapshot of
    the length when its iteration begins and then reads without the lock, which is safe
    because stored rows never change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[EventRow] = []
        self._by_request: dict[str, list[int]] = {}
        self._closed = False
        self.skipped_unknown = 0

    def __repr__(self) -> str:
        return f"MemoryStore(events={len(self._rows)})"

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append a batch atomically and return its gapless positions."""
        # Encode before taking the lock: a batch that fails to encode never touches the log.
        rows = events_to_rows(events)
        with self._lock:
            self._check_open()
            first = len(self._rows) + 1
            self._rows.extend(rows)
            for offset, row in enumerate(rows):
                if row.request_id is not None:
                    self._by_request.setdefault(row.request_id, []).append(first + offset)
        return list(range(first, first + len(rows)))

    def read(
        self, from_position: int = 1, *, limit: int | None = None, strict: bool = True
    ) -> Iterator[StoredEvent]:
        """Yield stored events in position order, starting at ``from_position``."""
        check_limit(limit)
        with self._lock:
            self._check_open()
        return self._stream(
            lambda: range(max(from_position, 1), len(self._rows) + 1), limit=limit, strict=strict
        )

    def read_request(self, request_id: str, *, strict: bool = True) -> Iterator[StoredEvent]:
        """Yield, in position order, the events of one request."""
        with self._lock:
            self._check_open()
        return self._stream(
            lambda: list(self._by_request.get(request_id, ())), limit=None, strict=strict
        )

    def last_position(self) -> int:
        """Return the last position, 0 when empty."""
        with self._lock:
            self._check_open()
            return len(self._rows)

    def close(self) -> None:
        """Drop the log; later calls raise ``StoreError``."""
        with self._lock:
            self._closed = True
            self._rows = []
            self._by_request = {}

    def _stream(
        self, positions: Callable[[], Iterable[int]], *, limit: int | None, strict: bool
    ) -> Iterator[StoredEvent]:
        # Like a SQLite statement, a read sees the log as it was when iteration began.
        with self._lock:
            self._check_open()
            rows = self._rows
            snapshot = positions()
        yield from decode_rows(
            ((position, rows[position - 1].data) for position in snapshot),
            limit=limit,
            strict=strict,
            on_skip=self._count_skip,
        )

    def _count_skip(self) -> None:
        with self._lock:
            self.skipped_unknown += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the memory store is closed")
