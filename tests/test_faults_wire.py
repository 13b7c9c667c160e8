"""Hostile answers on the wire: compression bombs and odd content encodings.

A scripted loopback server (``tests/chaos_support.py``) sends the bytes; the real adapters read
them over a real socket, and ``tracemalloc`` measures the peak of what the read allocated.
"""

from __future__ import annotations

import tracemalloc
import zlib
from typing import Any

import pytest
from chaos_support import Answer, ChaosServer, Seen, compressed_zeros

from routeledger.actors.wire import make_adapter
from routeledger.events import (
    Message,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderError,
    Request,
    Secret,
)

MODEL = ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=2.0)
LIMIT = 1024 * 1024
BOMB_SIZE = 256 * 1024 * 1024
"""256 MiB of zeros: about 250 KB gzipped, 256 times the body limit."""
PEAK_LIMIT = 24 * 1024 * 1024
"""What one bounded read may allocate at its peak: the limit and change, far below the bomb."""


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Return the bomb in each encoding, compressed once for the module."""
    return {
        "gzip": compressed_zeros(BOMB_SIZE, wbits=31),
        "deflate": compressed_zeros(BOMB_SIZE, wbits=15),
    }


def adapter(url: str, kind: str = "openai") -> Any:
    """Return a real adapter (own httpx client) on ``url`` with a 1 MiB body limit."""
    config = ProviderConfig(
        name="chaos",
        kind=kind,
        base_url=url,
        models=[MODEL],
        timeout_s=30.0,
        max_response_bytes=LIMIT,
        max_line_bytes=64 * 1024,
    )
    return make_adapter(config, api_key=Secret("sk-test-bomb"))


def request() -> Request:
    """Return a one-message request."""
    return Request(model="m", messages=[Message(role="user", content="hi")], max_tokens=8)


def serve(body: bytes, *, status: int, encoding: str, stream: bool) -> ChaosServer:
    """Return a server answering every request with ``body`` under ``encoding``."""
    ctype = "text/event-stream" if stream else "application/json"

    def script(seen: Seen) -> Answer:
        headers = {"content-type": ctype, "content-encoding": encoding}
        return Answer(status, headers, (body[i : i + 65536] for i in range(0, len(body), 65536)))

    return ChaosServer(script)


def peak_of(call: Any) -> tuple[BaseException, int]:
    """Run ``call``, which must raise; return its error and the peak traced allocation."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(ProviderError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return info.value, peak


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("call", ["complete", "stream", "error"])
def test_compression_bomb_is_refused_while_memory_stays_near_the_limit(
    bombs: dict[str, bytes], encoding: str, call: str
) -> None:
    """A bomb body, stream or error body is cut off as it decodes: peak memory ~ the limit."""
    status = 500 if call == "error" else 200
    with serve(bombs[encoding], status=status, encoding=encoding, stream=call == "stream") as srv:
        wire = adapter(srv.url)
        try:
            if call == "stream":
                error, peak = peak_of(lambda: list(wire.stream(request(), MODEL)))
            else:
                error, peak = peak_of(lambda: wire.complete(request(), MODEL))
        finally:
            wire.close()
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB"
    if call == "complete":
        assert isinstance(error, ProtocolError)
        assert "exceeds the limit" in str(error)
    elif call == "stream":
        assert isinstance(error, ProtocolError)
    else:
        assert error.status == 500  # the status classifies it; the bomb only cost a prefix


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
def test_compressed_answers_within_the_limit_are_decoded(encoding: str) -> None:
    """An ordinary answer in each supported encoding is decoded and parsed."""
    body = (
        b'{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    )
    wbits = {"gzip": 31, "deflate": 15}.get(encoding)
    if wbits is not None:
        c = zlib.compressobj(6, zlib.DEFLATED, wbits)
        body = c.compress(body) + c.flush()
    with serve(body, status=200, encoding=encoding, stream=False) as srv:
        wire = adapter(srv.url)
        try:
            response = wire.complete(request(), MODEL)
        finally:
            wire.close()
        assert srv.seen[0].headers["accept-encoding"] == "gzip, deflate"
    assert response.content == "ok"


def test_raw_deflate_without_zlib_header_is_decoded() -> None:
    """Some servers send ``deflate`` as a raw stream; it is decoded as well."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(b'{"choices":[{"message":{"content":"raw"}}]}') + c.flush()
    with serve(body, status=200, encoding="deflate", stream=False) as srv:
        wire = adapter(srv.url)
        try:
            assert wire.complete(request(), MODEL).content == "raw"
        finally:
            wire.close()


@pytest.mark.parametrize("encoding", ["compress", "br", "gzip, snappy"])
def test_unknown_content_encoding_is_a_clear_protocol_error(encoding: str) -> None:
    """An encoding we did not offer is refused by name, not parsed as garbage."""
    with serve(b"\x00\x01garbage", status=200, encoding=encoding, stream=False) as srv:
        wire = adapter(srv.url)
        try:
            with pytest.raises(ProtocolError, match="content-encoding") as info:
                wire.complete(request(), MODEL)
        finally:
            wire.close()
    assert encoding.split(",")[-1].strip() in str(info.value)


def test_corrupt_gzip_body_is_a_protocol_error() -> None:
    """Bytes that are not gzip under ``content-encoding: gzip`` are a malformed answer."""
    with serve(b"this is not gzip at all", status=200, encoding="gzip", stream=False) as srv:
        wire = adapter(srv.url)
        try:
            with pytest.raises(ProtocolError):
                wire.complete(request(), MODEL)
        finally:
            wire.close()
