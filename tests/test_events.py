"""Tests of the event codec: round trips of every event type, unknown tags, malformed rows."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger.events import (
    EVENT_TYPES,
    AttemptFailed,
    RequestReceived,
    StoreCorrupted,
    UnknownEventType,
    decode_event,
    encode_event,
    event_tag,
)
from routeledger.events._events import AnyEvent, Event

FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)
TEXT = st.text(max_size=8)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), FLOATS, TEXT)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Return values of the field type ``tp``; floats are finite, as JSON requires."""
    if tp is Any:
        return JSON
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return st.one_of(*(strategy_for(a) for a in args))
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(TEXT, strategy_for(args[1]), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        type(None): st.none(),
        bool: st.booleans(),
        int: st.integers(-(2**63), 2**63 - 1),
        float: FLOATS,
        str: TEXT,
    }
    return simple[tp]


def event_strategy(cls: type[Event]) -> st.SearchStrategy[Event]:
    """Return events of ``cls`` with every field drawn, defaults included."""
    return st.builds(cls, **{f.name: strategy_for(f.type) for f in msgspec.structs.fields(cls)})


def test_every_tag_is_dotted_and_unique() -> None:
    """Every event class has a distinct, dotted wire tag, and EVENT_TYPES lists them all."""
    classes = list(AnyEvent.__args__)
    assert len(EVENT_TYPES) == len(classes)
    for tag, cls in EVENT_TYPES.items():
        assert "." in tag
        assert issubclass(cls, Event)
        assert cls.__struct_config__.frozen


@pytest.mark.parametrize("tag", sorted(EVENT_TYPES))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_round_trip_every_event_type(tag: str, data: st.DataObject) -> None:
    """Any event of any type decodes from its encoding to an equal event of the same type."""
    cls = EVENT_TYPES[tag]
    event = data.draw(event_strategy(cls))
    wire = encode_event(event)
    assert json.loads(wire)["type"] == tag
    back = decode_event(wire)
    assert type(back) is cls
    assert back == event
    assert event_tag(back) == tag


def test_unknown_future_tag() -> None:
    """A tag this version does not know raises UnknownEventType with tag and position."""
    with pytest.raises(UnknownEventType) as info:
        decode_event(b'{"type":"request.teleported","ts":1.0}', position=12)
    assert info.value.tag == "request.teleported"
    assert info.value.position == 12


def test_unknown_fields_are_ignored() -> None:
    """Fields added by a newer minor version are ignored when reading."""
    row = b'{"type":"request.rejected","ts":1.0,"request_id":"r","error":"E","message":"m",'
    row += b'"added_later":{"x":1}}'
    event = decode_event(row)
    assert event_tag(event) == "request.rejected"


def test_defaults_fill_missing_fields() -> None:
    """Fields with defaults may be absent (older rows decode), and defaults are omitted."""
    event = RequestReceived(ts=1.0, request_id="r", model="m")
    wire = encode_event(event)
    assert b"stream" not in wire
    assert decode_event(wire) == event


@pytest.mark.parametrize(
    "row",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"a string"',
        b"{}",
        b'{"ts": 1.0}',
        b'{"type": 5, "ts": 1.0}',
        b'{"type":"attempt.failed","ts":1.0}',
        b'{"type":"attempt.failed","ts":"yesterday","request_id":"r","attempt":1,'
        b'"provider":"p","model":"m","error":"E"}',
        b'{"type":"request.received","ts":1.0,"request_id":"r","model":"m"',
    ],
)
def test_malformed_rows_are_store_corrupted(row: bytes) -> None:
    """Anything that is not a valid event of a known tag raises StoreCorrupted, nothing else."""
    with pytest.raises(StoreCorrupted):
        decode_event(row, position=3)


def test_decode_accepts_str() -> None:
    """A row given as text decodes like bytes."""
    event = AttemptFailed(
        ts=2.0, request_id="r", attempt=1, provider="p", model="m", error="RateLimited"
    )
    assert decode_event(encode_event(event).decode()) == event


@pytest.mark.parametrize("tag", sorted(EVENT_TYPES))
def test_every_event_refuses_positional_arguments(tag: str) -> None:
    """An event is built with keywords only, so a reordered field can never be misassigned."""
    cls = EVENT_TYPES[tag]
    with pytest.raises(TypeError):
        cls("positional", ts=1.0)  # type: ignore[misc,arg-type]  # positional on purpose


@pytest.mark.parametrize("tag", sorted(EVENT_TYPES))
def test_every_event_encodes_ts_last(tag: str) -> None:
    """``ts`` is each event's last field, so stored rows keep their byte layout."""
    assert EVENT_TYPES[tag].__struct_fields__[-1] == "ts"
