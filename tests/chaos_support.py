"""A tiny scripted HTTP server on 127.0.0.1 for fault tests the fake provider does not cover.

Each test gives a function from the request to the answer (status, headers, body parts); the
server writes exactly that, so a test can serve a gzip bomb, an error object inside a 200
answer or text full of control characters without teaching the fake provider every trick.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Answer", "ChaosServer", "Seen", "compressed_zeros", "sse"]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What the server sends back: a status, headers and the body in parts."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Iterable[bytes] = ()


Script = Callable[[Seen], Answer]


class ChaosServer:
    """Serve ``script``'s answers on an ephemeral loopback port, one thread per connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                seen = Seen(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                server.seen.append(seen)
                answer = server.script(seen)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                # No content-length: the body ends when the connection closes.
                self.send_header("connection", "close")
                self.end_headers()
                try:
                    for part in answer.body:
                        self.wfile.write(part)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up reading, as a bounded reader should
                self.close_connection = True

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Return the base URL (``http://127.0.0.1:PORT/v1``) adapters are configured with."""
        port = self._httpd.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    def __enter__(self) -> ChaosServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def compressed_zeros(size: int, *, wbits: int, block: int = 1 << 20) -> bytes:
    """Return ``size`` zero bytes compressed at level 9 (``wbits`` 31 gzip, 15 zlib, -15 raw)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(block)
    parts = [compressor.compress(zeros) for _ in range(size // block)]
    parts.append(compressor.flush())
    return b"".join(parts)


def sse(*events: str) -> Iterator[bytes]:
    """Yield each ``data:`` payload (or a whole pre-formatted event) as one SSE event."""
    for event in events:
        text = event if event.startswith(("data:", "event:")) else f"data: {event}"
        yield (text + "\n\n").encode()
