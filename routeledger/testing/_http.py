"""HTTP/1.1 for the fake provider: requests parsed by h11, responses written as raw bytes.

Requests are parsed by `h11` (request line, headers, ``content-length`` and chunked bodies,
pipelined bytes kept for the next request), so no hand-written parser decides what a request
is. Responses are written as raw bytes on purpose: the fake must produce answers a correct
HTTP library refuses to send (half a ``content-length`` body followed by a TCP RST, a body
on any forced status, a chunked stream cut at an exact event), and it must write the same
bytes as before byte for byte (lower-case header names in a fixed order, which h11 would
title-case and reorder). The raw path is `head`, `chunk` and `CHUNK_END`; `reset` and
`reset_soon` end a connection with an RST instead of a FIN. `ShapedWriter` shapes what one
response writes: extra header lines in its head, its head trickled one byte at a time, and
every write after its first trickled too.

h11 is stricter than the hand-written parser it replaced in one respect: an HTTP/1.1 request
without a ``Host`` header is answered 400 (RFC 9112 requires one; HTTP clients always send it).
A head over `MAX_HEAD` is answered 431 rather than dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
import struct
from typing import Any

import h11
import msgspec

__all__ = [
    "CHUNK_END",
    "MAX_BODY",
    "MAX_HEAD",
    "BadRequest",
    "Request",
    "ShapedWriter",
    "chunk",
    "head",
    "read_request",
    "reason",
    "reset",
    "reset_soon",
]

CHUNK_END = b"0\r\n\r\n"
MAX_BODY = 32 << 20
MAX_HEAD = 64 << 10
_READ_SIZE = 64 << 10
_LINGER_RST = struct.pack("ii", 1, 0)
_STATUS_LINES: dict[int, bytes] = {}


class Request(msgspec.Struct, frozen=True):
    """One parsed request.

    Attributes:
        method: The request method (``GET``, ``POST``...).
        path: The target without its query string.
        headers: Header values by lower-cased name (the last one wins).
        body: The raw body (de-chunked).
        keep_alive: Whether the client lets the connection be reused.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class BadRequest(Exception):
    """The bytes received are not an acceptable request; answer ``status`` and close.

    Args:
        status: 400 (not HTTP/1.x), 413 (body too large) or 431 (head too large).
        message: What is wrong, for the error body.
    """

    def __init__(self, status: int, message: str) -> None:
        """Keep the status to answer with."""
        super().__init__(message)
        self.status = status


async def read_request(
    reader: asyncio.StreamReader, pending: bytes
) -> tuple[Request | None, bytes]:
    """Read one request; return it (None at a clean end of stream) and the bytes after it.

    Args:
        reader: The connection.
        pending: Bytes already received after the previous request (pipelining).

    Raises:
        BadRequest: The request cannot be parsed, or is too large.
    """
    # One h11 connection per request: the response is written raw (see the module docstring),
    # so h11 never learns of it and could not start its next cycle.
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    if pending:  # b"" would tell h11 the peer has closed
        conn.receive_data(pending)
    request: h11.Request | None = None
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            data, closed = conn.trailing_data
            if closed:
                # The peer went away mid-request: answer only a half-sent head.
                if request is None and data.strip():
                    raise BadRequest(400, "incomplete request head") from exc
                return None, b""
            raise BadRequest(431 if exc.error_status_hint == 431 else 400, str(exc)) from exc
        if event is h11.NEED_DATA:
            data = await reader.read(_READ_SIZE)
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            if event.http_version not in (b"1.0", b"1.1"):
                version = event.http_version.decode("latin-1")
                raise BadRequest(400, f"unsupported protocol HTTP/{version}")
            request = event
            declared = _declared_length(event)
            if declared is not None and declared > MAX_BODY:
                raise BadRequest(413, "request body too large")
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                raise BadRequest(413, "request body too large")
            parts.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return _request(request, b"".join(parts)), conn.trailing_data[0]
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


def _declared_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked that it is a number
    return None


def _request(event: h11.Request, body: bytes) -> Request:
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
    connection = headers.get("connection", "").lower()
    # HTTP/1.0 keep-alive is honoured (h11 itself would always close).
    if event.http_version == b"1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    return Request(
        method=event.method.decode("latin-1"),
        path=event.target.decode("latin-1").split("?", 1)[0],
        headers=headers,
        body=body,
        keep_alive=keep_alive,
    )


def reason(status: int) -> str:
    """Return the reason phrase of ``status`` (529 is Anthropic's "Site Overloaded")."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Site Overloaded" if status == 529 else "Unknown"


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason(status)}\r\n".encode("latin-1")
    return line


def head(
    status: int,
    content_type: bytes,
    *,
    length: int | None,
    close: bool,
    extra: bytes = b"",
) -> bytes:
    """Build a response head; ``length=None`` means a chunked body."""
    framing = (
        b"transfer-encoding: chunked\r\n"
        if length is None
        else b"content-length: " + str(length).encode() + b"\r\n"
    )
    return b"".join(
        (
            _status_line(status),
            b"content-type: ",
            content_type,
            b"\r\n",
            framing,
            b"connection: close\r\n" if close else b"",
            extra,
            b"\r\n",
        )
    )


def chunk(data: bytes) -> bytes:
    """Frame ``data`` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


async def reset_soon(writer: asyncio.StreamWriter) -> None:
    """Reset the connection after a short pause."""
    # The pause lets the client read what was sent before the RST discards its buffers.
    await asyncio.sleep(0.02)
    reset(writer)


class ShapedWriter:
    """Writes one response through a connection's writer, shaped on the way.

    ``extra`` header lines go into the response's head (before its blank line); with
    ``head_ms`` the head's bytes go out one at a time that far apart; with ``body_ms`` every
    write after the first goes out one byte at a time that far apart. Everything else is the
    inner writer's. Only :meth:`write`, :meth:`drain`, :attr:`transport`,
    :meth:`get_extra_info` and :meth:`close` are offered: what the answering code uses.
    """

    def __init__(
        self,
        inner: asyncio.StreamWriter,
        *,
        extra: bytes = b"",
        head_ms: float = 0,
        body_ms: float = 0,
    ) -> None:
        self._inner = inner
        self._extra = extra
        self._head_s = head_ms / 1000
        self._body_s = body_ms / 1000
        self._pending: list[bytes] = []
        self._writes = 0

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The inner writer's transport (resets abort it)."""
        return self._inner.transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Return the inner writer's transport information."""
        return self._inner.get_extra_info(name, default)

    def close(self) -> None:
        """Close the inner writer."""
        self._inner.close()

    def write(self, data: bytes) -> None:
        """Queue ``data``; :meth:`drain` sends it, shaped."""
        self._pending.append(data)

    async def drain(self) -> None:
        """Send what was written, shaped, and wait until the inner writer drained."""
        data = b"".join(self._pending)
        self._pending.clear()
        self._writes += 1
        first = self._writes == 1
        if first:
            end = data.find(b"\r\n\r\n")  # the head's blank line
            if end >= 0 and self._extra:
                data = data[: end + 2] + self._extra + data[end + 2 :]
                end += len(self._extra)
            if end >= 0 and self._head_s > 0:
                await self._trickle(data[: end + 4], self._head_s)
                data = data[end + 4 :]
        if not first and self._body_s > 0:
            await self._trickle(data, self._body_s)
            return
        self._inner.write(data)
        await self._inner.drain()

    async def _trickle(self, data: bytes, gap_s: float) -> None:
        for i in range(len(data)):
            self._inner.write(data[i : i + 1])
            await self._inner.drain()
            await asyncio.sleep(gap_s)
