"""Content-encoding decoded in bounded steps, so a compression bomb never fills memory.

httpx decodes ``content-encoding`` inside ``iter_bytes``: each raw chunk off the socket is
inflated whole, and 64 KiB of a gzip bomb inflates to about 64 MiB before any limit can look
at it. Here the raw bytes are inflated with ``zlib``'s ``max_length``, so no piece handed to a
reader is larger than :data:`STEP` and a reader that stops at its limit has allocated about
that limit. Only the encodings we offer (:data:`ACCEPT_ENCODING`) are decoded; any other is
refused by name with ``httpx.DecodingError``, which the error mapping turns into a
``ProtocolError``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

import httpx

__all__ = ["ACCEPT_ENCODING", "STEP", "iter_decoded"]

ACCEPT_ENCODING = "gzip, deflate"
"""What every request offers; brotli and zstd are never offered, so never need decoding."""

STEP = 64 * 1024
"""The largest decoded piece produced at a time."""

_GZIP_WBITS = zlib.MAX_WBITS | 16
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS


class _Inflater:
    """One zlib-based stage (gzip or deflate), inflating at most :data:`STEP` bytes a call."""

    __slots__ = ("_decompressor", "_raw_fallback")

    def __init__(self, wbits: int, *, raw_fallback: bool) -> None:
        self._decompressor = zlib.decompressobj(wbits)
        # "deflate" should be zlib-wrapped, but some servers send a raw deflate stream.
        self._raw_fallback = raw_fallback

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield what ``data`` inflates to, in pieces of at most :data:`STEP` bytes."""
        while True:
            try:
                out = self._decompressor.decompress(data, STEP)
            except zlib.error as exc:
                if not self._raw_fallback:
                    raise httpx.DecodingError(f"cannot decode the body ({exc})") from exc
                self._raw_fallback = False
                self._decompressor = zlib.decompressobj(_RAW_WBITS)
                continue
            self._raw_fallback = False
            data = self._decompressor.unconsumed_tail
            if out:
                yield out
            # A full piece may leave output pending inside zlib even with no input left.
            if not data and (len(out) < STEP or self._decompressor.eof):
                return

    def flush(self) -> Iterator[bytes]:
        """Yield what is left once the input has ended (nothing, once ``feed`` drained it)."""
        try:
            rest = self._decompressor.flush()
        except zlib.error as exc:
            raise httpx.DecodingError(f"cannot decode the body ({exc})") from exc
        for i in range(0, len(rest), STEP):
            yield rest[i : i + STEP]


def _stages(header: str) -> list[_Inflater]:
    """Return the stages that undo ``header``'s encodings, in decoding order."""
    stages: list[_Inflater] = []
    # Encodings are listed in the order they were applied, so they are undone in reverse.
    for name in reversed([n.strip().lower() for n in header.split(",") if n.strip()]):
        if name == "identity":
            continue
        if name in ("gzip", "x-gzip"):
            stages.append(_Inflater(_GZIP_WBITS, raw_fallback=False))
        elif name == "deflate":
            stages.append(_Inflater(_ZLIB_WBITS, raw_fallback=True))
        else:
            raise httpx.DecodingError(
                f"unsupported content-encoding {name[:40]!r} (we offer {ACCEPT_ENCODING})"
            )
    return stages


def _through(stages: Sequence[_Inflater], data: bytes) -> Iterator[bytes]:
    if not stages:
        if data:
            yield data
        return
    for piece in stages[0].feed(data):
        yield from _through(stages[1:], piece)


def iter_decoded(response: httpx.Response) -> Iterator[bytes]:
    """Yield the decoded body of a streamed ``response`` in bounded pieces.

    Raw bytes come from ``response.iter_raw()`` (as they arrive from the socket); each
    compressed stage emits at most :data:`STEP` bytes at a time, so a caller that stops
    reading at its limit never holds much more than that limit.

    Raises:
        httpx.DecodingError: The encoding is not one we offer, or the bytes are not in it.
        httpx.HTTPError: Reading failed.
    """
    try:
        content = response.content
    except httpx.ResponseNotRead:
        pass
    else:
        # Already read and decoded by httpx (a body given as bytes, as MockTransport answers).
        for i in range(0, len(content), STEP):
            yield content[i : i + STEP]
        return
    stages = _stages(response.headers.get("content-encoding", ""))
    for raw in response.iter_raw():
        yield from _through(stages, raw)
    for i, stage in enumerate(stages):
        for piece in stage.flush():
            yield from _through(stages[i + 1 :], piece)
