"""Tests of the incremental server-sent events parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.actors.wire import SSEError, SSEEvent, SSEParser


def parse_all(data: bytes, **kwargs: int) -> list[SSEEvent]:
    """Feed ``data`` in one piece and return the events."""
    return SSEParser(**kwargs).feed(data)


def parse_chunks(chunks: list[bytes], **kwargs: int) -> list[SSEEvent]:
    """Feed ``chunks`` one by one and return all the events."""
    parser = SSEParser(**kwargs)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def test_data_lines_dispatch_on_blank_line() -> None:
    """An event is dispatched at a blank line, with the default type ``message``."""
    assert parse_all(b"data: hello\n\n") == [SSEEvent("message", "hello", None)]


def test_no_event_until_blank_line() -> None:
    """Data without the closing blank line is held back."""
    parser = SSEParser()
    assert parser.feed(b"data: hello\n") == []
    assert parser.feed(b"\n") == [SSEEvent("message", "hello")]


def test_event_field_names_the_event() -> None:
    """An ``event:`` field sets the type of that event only."""
    events = parse_all(b"event: ping\ndata: {}\n\ndata: x\n\n")
    assert events == [SSEEvent("ping", "{}"), SSEEvent("message", "x")]


def test_multiline_data_joined_with_newline() -> None:
    """Several ``data:`` lines join with ``\\n``."""
    assert parse_all(b"data: a\ndata: b\ndata:\n\n") == [SSEEvent("message", "a\nb\n")]


def test_comments_and_unknown_fields_ignored() -> None:
    """Comment lines and unknown fields change nothing."""
    events = parse_all(b": keep-alive\nfoo: bar\nretry: 10\ndata: x\n\n:\n\n")
    assert events == [SSEEvent("message", "x")]


def test_only_one_leading_space_stripped() -> None:
    """One space after the colon is dropped, the rest is data."""
    assert parse_all(b"data:  two\n\ndata:none\n\n") == [
        SSEEvent("message", " two"),
        SSEEvent("message", "none"),
    ]


def test_event_without_data_is_not_dispatched() -> None:
    """An event with no data lines is dropped, and its type does not leak to the next."""
    assert parse_all(b"event: lonely\n\ndata: x\n\n") == [SSEEvent("message", "x")]


def test_field_without_colon() -> None:
    """A line without a colon is a field with an empty value."""
    assert parse_all(b"data\n\n") == [SSEEvent("message", "")]


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_line_endings(eol: bytes) -> None:
    """LF, CR and CRLF all end lines."""
    data = b"event: e" + eol + b"data: 1" + eol + eol + b"data: 2" + eol + eol
    assert parse_all(data) == [SSEEvent("e", "1"), SSEEvent("message", "2")]


def test_crlf_split_across_chunks() -> None:
    """A CRLF split between two chunks is one line ending, not two."""
    assert parse_chunks([b"data: a\r", b"\ndata: b\r", b"\n\r\n"]) == [SSEEvent("message", "a\nb")]


def test_bom_stripped_only_at_start() -> None:
    """A leading byte order mark is dropped, even split across chunks."""
    assert parse_chunks([b"\xef", b"\xbb", b"\xbfdata: x\n\n"]) == [SSEEvent("message", "x")]
    with_bom_later = parse_all(b"data: x\n\n\xef\xbb\xbfdata: y\n\n")
    assert with_bom_later == [SSEEvent("message", "x")]  # the second line's field is not "data"


def test_utf8_split_inside_character() -> None:
    """A multi-byte character split across chunks decodes once whole."""
    data = "data: héllo €😀\n\n".encode()
    for cut in range(len(data)):
        assert parse_chunks([data[:cut], data[cut:]]) == [SSEEvent("message", "héllo €😀")]


def test_id_persists() -> None:
    """The last event id carries over to later events; one with NUL is ignored."""
    events = parse_all(b"id: 7\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\n")
    assert [e.id for e in events] == ["7", "7", "7"]


def test_line_cap() -> None:
    """A line longer than the cap raises, whether it ends or not."""
    with pytest.raises(SSEError):
        parse_all(b"data: " + b"x" * 100 + b"\n\n", max_line_bytes=50)
    parser = SSEParser(max_line_bytes=50)
    with pytest.raises(SSEError):
        for _ in range(10):
            parser.feed(b"x" * 20)


def test_line_at_cap_accepted() -> None:
    """A line of exactly the cap is accepted."""
    line = b"data: " + b"x" * 44
    assert parse_all(line + b"\n\n", max_line_bytes=50) == [SSEEvent("message", "x" * 44)]


def test_event_cap() -> None:
    """Many small data lines cannot grow one event past its cap."""
    with pytest.raises(SSEError):
        parse_all(b"data: 0123456789\n" * 20 + b"\n", max_line_bytes=50, max_event_bytes=100)


def test_invalid_utf8_raises() -> None:
    """Bytes that are not UTF-8 raise instead of being guessed at."""
    with pytest.raises(SSEError):
        parse_all(b"data: \xc3\x28\xff\n\n")


def test_incomplete_event_at_end_is_not_dispatched() -> None:
    """Data pending when the bytes stop is not an event."""
    assert parse_all(b"data: a\n\ndata: partial") == [SSEEvent("message", "a")]


_LINES = st.lists(
    st.one_of(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
            max_size=12,
        ).map(lambda t: "data: " + t),
        st.sampled_from(["", ":comment", "event: x", "event: message_stop", "id: 1", "data"]),
    ),
    max_size=25,
)


@given(
    lines=_LINES,
    eol=st.sampled_from(["\n", "\r", "\r\n"]),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_any_split_gives_same_events(
    lines: list[str], eol: str, bom: bool, cuts: list[int]
) -> None:
    """Splitting a byte stream anywhere into chunks yields exactly the same events."""
    data = (b"\xef\xbb\xbf" if bom else b"") + eol.join([*lines, "", ""]).encode("utf-8")
    whole = parse_all(data)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert parse_chunks(chunks) == whole
    assert parse_chunks([data[i : i + 1] for i in range(len(data))]) == whole
