"""An incremental parser for server-sent events (the ``text/event-stream`` format).

It follows the WHATWG event-stream interpretation rules: a leading byte order mark is
dropped, lines end with CRLF, LF or CR, lines starting with ``:`` are comments, ``data:``
lines of one event are joined with ``\\n``, a blank line dispatches the event, and an event
with no data is not dispatched. Bytes may arrive split anywhere (inside a CRLF pair, inside a
multi-byte UTF-8 character): :meth:`SSEParser.feed` returns the same events for any split.

Unlike a browser, the parser is strict where a hostile or broken server could hurt us: a line
longer than ``max_line_bytes``, an event whose data grows past ``max_event_bytes``, or bytes
that are not UTF-8 raise :class:`SSEError` instead of buffering without bound or guessing.
"""

from __future__ import annotations

import msgspec

__all__ = ["SSEError", "SSEEvent", "SSEParser"]

_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """The byte stream is not a well-formed, bounded event stream."""


class SSEEvent(msgspec.Struct, frozen=True):
    """One dispatched event: its type (``message`` unless named), data and last event id."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    """Turn chunks of an event stream into events, keeping state between chunks.

    Args:
        max_line_bytes: The longest line accepted, terminator excluded.
        max_event_bytes: The most data (counted in characters) one event may accumulate;
            defaults to ``max_line_bytes``.
    """

    __slots__ = (
        "_at_start",
        "_buf",
        "_data",
        "_data_bytes",
        "_event",
        "_last_id",
        "_max_event",
        "_max_line",
        "_skip_lf",
    )

    def __init__(self, *, max_line_bytes: int = 1024 * 1024, max_event_bytes: int | None = None):
        self._max_line = max_line_bytes
        self._max_event = max_line_bytes if max_event_bytes is None else max_event_bytes
        self._buf = b""
        self._at_start = True
        # A CR ended the previous chunk: an LF opening the next chunk belongs to it (CRLF).
        self._skip_lf = False
        self._data: list[str] = []
        self._data_bytes = 0
        self._event = ""
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completed, in order.

        Raises:
            SSEError: A line or an event is over its cap, or the bytes are not UTF-8.
        """
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        buf = self._buf + chunk if self._buf else chunk
        if self._at_start:
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf  # maybe a BOM split across chunks: wait for more bytes
                return []
            self._at_start = False
            if buf.startswith(_BOM):
                buf = buf[3:]
        if b"\r" in buf:
            # A trailing CR ends a line now; remember to drop the LF that may follow it.
            self._skip_lf = buf[-1] == 0x0D
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > self._max_line:
                raise SSEError(f"event-stream line longer than {self._max_line} bytes")
            self._buf = buf
            return []
        rest = buf[end + 1 :]
        if len(rest) > self._max_line:
            raise SSEError(f"event-stream line longer than {self._max_line} bytes")
        self._buf = rest
        try:
            # Complete lines end on a character boundary (LF never occurs inside a UTF-8
            # sequence), so one decode of all of them is safe and cheaper than one per line.
            text = buf[:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SSEError("event stream is not valid UTF-8") from exc
        return self._lines(text.split("\n"))

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        max_line = self._max_line
        for line in lines:
            if not line:
                if self._data:
                    events.append(
                        SSEEvent(self._event or "message", "\n".join(self._data), self._last_id)
                    )
                    self._data = []
                    self._data_bytes = 0
                self._event = ""
                continue
            # Characters are at most 4 bytes: only lines that might be over the cap pay for
            # an exact byte count.
            if len(line) * 4 > max_line and len(line.encode("utf-8")) > max_line:
                raise SSEError(f"event-stream line longer than {max_line} bytes")
            if line[0] == ":":
                continue
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if field == "data":
                self._data_bytes += len(value) + 1
                if self._data_bytes > self._max_event:
                    raise SSEError(f"event-stream event larger than {self._max_event} bytes")
                self._data.append(value)
            elif field == "event":
                self._event = value
            elif field == "id" and "\0" not in value:
                self._last_id = value
            # "retry" and unknown fields are ignored: we never reconnect.
        return events
