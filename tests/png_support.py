"""A tiny PNG reader for the tests (zlib and struct only): 8-bit RGB or RGBA, not interlaced.

Headless Chromium's screenshots are such PNGs; this turns one into rows of ``(r, g, b)``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

__all__ = ["read_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Return ``(width, height, rows)``: each row holds ``width`` RGB triples as bytes."""
    data = path.read_bytes()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    offset, idat = len(_SIGNATURE), bytearray()
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}")
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 0:
            pass
        elif kind == 2:
            line = _add_bytes(line, previous, stride)
        else:
            _unfilter(kind, line, previous, channels)
        previous = line
        if channels == 4:
            rgb = bytearray(line)
            del rgb[3::4]
            rows.append(bytes(rgb))
        else:
            rows.append(bytes(line))
    return width, height, rows


def _add_bytes(a: bytearray, b: bytearray, n: int) -> bytearray:
    """Return ``a + b`` byte by byte modulo 256, all bytes at once (SWAR on one big int).

    The "up" filter, which most rows of a screenshot use; a loop would take seconds.
    """
    low, high = int.from_bytes(b"\x7f" * n, "big"), int.from_bytes(b"\x80" * n, "big")
    x, y = int.from_bytes(a, "big"), int.from_bytes(b, "big")
    total = ((x & low) + (y & low)) ^ ((x ^ y) & high)
    return bytearray(total.to_bytes(n, "big"))


def _unfilter(kind: int, line: bytearray, previous: bytearray, channels: int) -> None:
    """Undo the sub, average or Paeth filter of one row in place (one loop per filter)."""
    n = len(line)
    if kind == 1:
        for i in range(channels, n):
            line[i] = (line[i] + line[i - channels]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = line[i - channels] if i >= channels else 0
            line[i] = (line[i] + (left + previous[i]) // 2) & 0xFF
    elif kind == 4:
        for i in range(channels):
            line[i] = (line[i] + previous[i]) & 0xFF  # no left pixel: Paeth picks up
        for i in range(channels, n):
            a, b, c = line[i - channels], previous[i], previous[i - channels]
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    else:
        raise ValueError(f"unknown PNG row filter {kind}")
