"""Tests of the fake provider's HTTP layer (routeledger.testing._http), without sockets."""

from __future__ import annotations

import asyncio

import pytest

from routeledger.testing._http import (
    MAX_BODY,
    BadRequest,
    Request,
    chunk,
    head,
    read_request,
)


def read_all(raw: bytes) -> list[Request | BadRequest]:
    """Feed ``raw`` then end of stream; return each request read, or the error that ended it."""

    async def run() -> list[Request | BadRequest]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        out: list[Request | BadRequest] = []
        pending = b""
        while True:
            try:
                request, pending = await read_request(reader, pending)
            except BadRequest as exc:
                out.append(exc)
                return out
            if request is None:
                return out
            out.append(request)

    return asyncio.run(run())


def test_pipelined_requests_are_read_one_after_the_other() -> None:
    """Bytes after one request are kept and parsed as the next one."""
    raw = (
        b"POST /v1/messages?beta=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    first, second = read_all(raw)
    assert first == Request(
        method="POST",
        path="/v1/messages",
        headers={"host": "x", "content-length": "2"},
        body=b"{}",
        keep_alive=True,
    )
    assert isinstance(second, Request)
    assert (second.method, second.path, second.keep_alive) == ("GET", "/v1/models", False)


def test_a_chunked_body_is_reassembled() -> None:
    """A chunked request body is de-chunked, trailers included."""
    raw = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n"
    )
    (request,) = read_all(raw)
    assert isinstance(request, Request)
    assert request.body == b"abcde"


def test_http_1_0_keeps_alive_only_when_asked() -> None:
    """An HTTP/1.0 request keeps the connection only with "connection: keep-alive"."""
    (plain,) = read_all(b"GET /v1/models HTTP/1.0\r\n\r\n")
    (kept,) = read_all(b"GET /v1/models HTTP/1.0\r\nconnection: keep-alive\r\n\r\n")
    assert isinstance(plain, Request) and isinstance(kept, Request)
    assert (plain.keep_alive, kept.keep_alive) == (False, True)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
        (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (128 << 10) + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nhost: x\r\n", 400),
    ],
)
def test_unacceptable_requests_raise_with_the_status_to_answer(raw: bytes, status: int) -> None:
    """Malformed, too large or half-sent requests end the connection with 400, 413 or 431."""
    (error,) = read_all(raw)
    assert isinstance(error, BadRequest)
    assert error.status == status


def test_a_peer_leaving_between_requests_or_mid_body_ends_quietly() -> None:
    """End of stream before a request, or inside a body, reads as no request at all."""
    assert read_all(b"") == []
    assert read_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc") == []


def test_response_heads_and_chunks_are_written_byte_for_byte() -> None:
    """head() writes lower-case framing headers in a fixed order; chunk() frames in hex."""
    assert head(200, b"application/json", length=2, close=False, extra=b"x-a: 1\r\n") == (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-a: 1\r\n\r\n"
    )
    assert head(529, b"text/event-stream", length=None, close=True) == (
        b"HTTP/1.1 529 Site Overloaded\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
