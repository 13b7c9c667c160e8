"""The mapper between events and stored rows: the store knows rows, never domain classes.

A row is ``(type, ts, request_id, data)``: the wire tag, the event time, the request id
(``None`` for events that have none) and the encoded event as JSON text. The position is not
part of the row; each store assigns it when it appends. Stored data is decoded from bytes or
text alike: logs of schema version 1 hold the same JSON as BLOBs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from routeledger.events import (
    Event,
    StoreCorrupted,
    StoreError,
    UnknownEventType,
    decode_event,
    encode_event,
    event_tag,
)
from routeledger.store._base import StoredEvent

if TYPE_CHECKING:
    from routeledger.events import AnyEvent

__all__ = [
    "EventNotStorable",
    "EventRow",
    "decode_rows",
    "event_to_row",
    "events_to_rows",
    "row_to_event",
]


class EventNotStorable(StoreError):
    """An event cannot be stored: it does not encode, or it would not decode back.

    Raised by ``append`` before anything is written. This is a fault in the event (for
    example a NaN float, a field of the wrong type, or a tag outside ``AnyEvent``), not in
    the store: retrying the same batch fails the same way.
    """

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index
        """The index of the offending event in its batch."""


class EventRow(NamedTuple):
    """An event as stored, without its position."""

    type: str
    ts: float
    request_id: str | None
    data: str
    """The event's JSON, exactly the UTF-8 text that ``encode_event`` produced."""


def event_to_row(event: Event, *, index: int = 0) -> EventRow:
    """Map one event to its row, proving that the row decodes back.

    The decode check costs about a third of a microsecond and keeps a poison row out of the
    log: msgspec does not validate on construction, and it encodes NaN and infinity as
    ``null``, so an event can encode fine yet never decode, which would break every strict
    replay from then on.

    Raises:
        EventNotStorable: the event does not encode, or does not decode back.
    """
    if not isinstance(event, Event):
        raise EventNotStorable(
            f"batch item {index} is a {type(event).__name__}, not an Event", index=index
        )
    tag = event_tag(event)
    try:
        encoded = encode_event(event)
        # Text, not bytes, so that SQLite stores TEXT (see _schema). msgspec writes valid
        # UTF-8, so the decode cannot fail; a UnicodeDecodeError would still be a ValueError.
        data = encoded.decode("utf-8")
    except (TypeError, ValueError, OverflowError) as exc:
        raise EventNotStorable(
            f"event {index} of the batch ({tag}) cannot be encoded: {exc}", index=index
        ) from exc
    try:
        decode_event(encoded)
    except StoreError as exc:
        raise EventNotStorable(
            f"event {index} of the batch ({tag}) would not decode back: {exc.message}",
            index=index,
        ) from exc
    request_id = getattr(event, "request_id", None)
    return EventRow(tag, event.ts, request_id, data)


def events_to_rows(events: Sequence[Event]) -> list[EventRow]:
    """Map a batch to rows, all or nothing.

    Raises:
        EventNotStorable: some event of the batch cannot be stored (``index`` says which).
    """
    return [event_to_row(event, index=index) for index, event in enumerate(events)]


def row_to_event(position: int, data: object) -> AnyEvent:
    """Decode the ``data`` of the row at ``position``.

    Raises:
        UnknownEventType: the row's tag is not known to this version.
        StoreCorrupted: the row is not a valid event.
    """
    if not isinstance(data, bytes | str):
        raise StoreCorrupted(
            f"stored event at position {position} holds a {type(data).__name__}, not JSON",
            position=position,
        )
    return decode_event(data, position=position)


def decode_rows(
    rows: Iterable[tuple[int, object]],
    *,
    limit: int | None,
    strict: bool,
    on_skip: Callable[[], None],
) -> Iterator[StoredEvent]:
    """Decode ``(position, data)`` rows lazily into stored events.

    Args:
        rows: the rows, in position order.
        limit: stop after yielding this many events (``None``: no limit).
        strict: raise ``UnknownEventType`` on an unknown tag; otherwise call ``on_skip``
            and go on.
        on_skip: called once per skipped row (the store counts them).

    Raises:
        UnknownEventType: strict, and a row's tag is unknown.
        StoreCorrupted: a row is not a valid event (strict or not).
    """
    if limit == 0:
        return
    remaining = limit
    for position, data in rows:
        try:
            event = row_to_event(position, data)
        except UnknownEventType:
            if strict:
                raise
            on_skip()
            continue
        yield StoredEvent(position, event)
        if remaining is not None:
            remaining -= 1
            if remaining == 0:
                return
