"""The event store contract: what every event log offers, whatever holds the rows.

An event store is an append-only sequence of events with gapless global positions
``1, 2, 3, ...``. :class:`MemoryStore` is the reference model; :class:`SQLiteStore` must
behave the same way (one contract test suite runs against both).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar, runtime_checkable

# One definition of a fold, in the layer of the events it folds; re-exported here because
# a store's replay feeds any such fold.
from routeledger.events._projections import Projection

if TYPE_CHECKING:
    from routeledger.events import Event

__all__ = ["EventStore", "Projection", "StoredEvent", "check_limit"]


class StoredEvent(NamedTuple):
    """One event read back from a store, with its global position."""

    position: int
    event: Event
    """An instance of one of the classes of ``AnyEvent``."""


P = TypeVar("P", bound=Projection)


@runtime_checkable
class EventStore(Protocol):
    """An append-only event log with gapless global positions.

    Reads are lazy iterators that stream rows (they never load the whole log). A strict read
    raises :class:`~routeledger.events.UnknownEventType` at the first row whose tag this
    version does not know; a non-strict read skips such rows and counts them in
    :attr:`skipped_unknown`. A row that cannot be decoded at all raises
    :class:`~routeledger.events.StoreCorrupted` in both modes.
    """

    skipped_unknown: int
    """How many unknown-tag rows non-strict reads have skipped so far."""

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append a batch atomically and return its positions.

        The positions are consecutive and follow the last committed position. Either every
        event of the batch is stored or none is.

        Raises:
            EventNotStorable: an event cannot be encoded, or would not decode back.
            StoreError: the store failed; nothing of the batch was stored.
        """
        ...

    def read(
        self, from_position: int = 1, *, limit: int | None = None, strict: bool = True
    ) -> Iterator[StoredEvent]:
        """Yield stored events in position order, starting at ``from_position``.

        Args:
            from_position: the first position to yield (positions below 1 read from the
                start).
            limit: yield at most this many events (``None``: no limit).
            strict: raise on an unknown tag instead of skipping it.
        """
        ...

    def read_request(self, request_id: str, *, strict: bool = True) -> Iterator[StoredEvent]:
        """Yield, in position order, the events whose ``request_id`` equals ``request_id``.

        ``strict`` works as in :meth:`read`.
        """
        ...

    def replay(self, projection: P, *, from_position: int = 1, strict: bool = True) -> P:
        """Feed every event from ``from_position`` on to ``projection`` and return it.

        Memory stays bounded: events are streamed, one fetch batch at a time.
        """
        for position, event in self.read(from_position, strict=strict):
            projection.apply(position, event)
        return projection

    def last_position(self) -> int:
        """Return the position of the last committed event, 0 when the store is empty."""
        ...

    def close(self) -> None:
        """Release the store's resources; later calls raise ``StoreError``. Idempotent."""
        ...


def check_limit(limit: int | None) -> None:
    """Refuse a negative read ``limit`` (a caller's bug, so ``ValueError``)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
