"""A loopback fake LLM provider speaking the OpenAI and Anthropic wire formats.

`FakeProvider` is the test double of the whole suite, the provider behind ``routeledger
demo`` and the server of the benchmark. It is a small asyncio HTTP/1.1 server running on its
own event loop in a background thread, so latencies and stalls never block other connections
and hundreds of keep-alive connections are served at once.

Both formats live under ``url + "/v1"``:

- ``POST /v1/chat/completions``: OpenAI chat completions (JSON, or SSE ``data:`` chunks ending
  in ``data: [DONE]``, with a final usage chunk when ``stream_options.include_usage`` is true);
- ``POST /v1/messages``: Anthropic messages (JSON, or the ``message_start`` ...
  ``message_stop`` event sequence);
- ``GET /v1/models`` (and ``GET /v1/models/{id}``): the configured models, in a shape both
  clients accept (OpenAI ``object``/``owned_by`` plus Anthropic ``type``/``display_name``).

A `Behaviour` shapes every answer: latency, jitter, time to first token, failures (random with
a seeded RNG, or forced), provider error bodies, malformed bodies, truncated, failing and
stalling streams, and connection resets. Randomness is deterministic: a ``random.Random(seed)``
is drawn exactly twice per request (failure roll, then jitter) in request arrival order.

Example:
    >>> with FakeProvider(Behaviour(latency_ms=5)) as fake:  # doctest: +SKIP
    ...     httpx.post(fake.url + "/v1/chat/completions", json={...})
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import random
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

import msgspec

__all__ = ["ERROR_CODES", "Behaviour", "FakeProvider", "FakeStats"]

_log = logging.getLogger(__name__)

_MALFORMED = frozenset({"html", "wrong_json", "not_utf8", "huge"})
_RESETS = frozenset({"before_response", "mid_body"})


class Behaviour(msgspec.Struct, kw_only=True, frozen=True):
    """How the fake provider answers; every field is optional.

    Attributes:
        latency_ms: Delay before the response head (JSON) or before the first chunk (stream,
            unless ``ttft_ms`` is set). Also applied before error answers and resets.
        jitter_ms: Uniform random extra delay in ``[0, jitter_ms)`` from the seeded RNG.
        ttft_ms: Time to first token of a stream; replaces ``latency_ms`` for streams.
        inter_token_ms: Delay between two streamed text chunks.
        output_tokens: Number of text chunks streamed, and the reported output tokens.
        content: Reply text (split into ``output_tokens`` chunks when streaming); the default
            is deterministic words, one per token.
        fail_rate: Probability of a random failure with ``fail_status`` (seeded RNG).
        fail_status: The status of a random failure.
        status: Force this status on every request (errors get a body in the path's format).
        retry_after: ``retry-after`` header value sent with 429/503/529 answers.
        retry_after_ms: ``retry-after-ms`` header value sent with 429/503/529 answers.
        error_code: Shape the error body after this provider error (see `ERROR_CODES`); with
            no ``status``/``fail_rate`` every request fails with the code's usual status.
        malformed: ``"html"`` (200 text/html page), ``"wrong_json"`` (200 JSON, or SSE events,
            of the wrong shape), ``"not_utf8"`` (200 body with invalid UTF-8 bytes),
            ``"huge"`` (200 chunked body of ``huge_bytes``, far over 8 MiB, written without
            buffering; a stream gets one single oversized SSE line).
        huge_bytes: Size of the ``"huge"`` body.
        truncate_after_chunks: A stream ends after this many text chunks with no terminator
            (no ``[DONE]``/``message_stop``): the chunked body is ended cleanly and the
            connection closed.
        error_event_after_chunks: A stream sends an error event after this many text chunks
            (Anthropic ``event: error`` with ``overloaded_error``; OpenAI a
            ``data: {"error": ...}`` line) and ends with no terminator.
        stall_after_chunks: A stream pauses ``stall_ms`` after this many text chunks.
        stall_ms: Length of the mid-stream pause.
        reset: ``"before_response"`` (read the request, then close with RST, SO_LINGER 0) or
            ``"mid_body"`` (send the head and part of the body, then RST).
        models: Model ids served by ``GET /v1/models``.
    """

    latency_ms: float = 0
    jitter_ms: float = 0
    ttft_ms: float | None = None
    inter_token_ms: float = 0
    output_tokens: int = 8
    content: str | None = None
    fail_rate: float = 0
    fail_status: int = 500
    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: int | None = None
    error_code: str | None = None
    malformed: str | None = None
    huge_bytes: int = 24 << 20
    truncate_after_chunks: int | None = None
    error_event_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    stall_ms: float = 0
    reset: str | None = None
    models: list[str] = msgspec.field(default_factory=lambda: ["fake-model"])

    def __post_init__(self) -> None:
        """Reject values the server could not honour, at construction time."""
        if not 0 <= self.fail_rate <= 1:
            raise ValueError(f"fail_rate must be within [0, 1], got {self.fail_rate}")
        if self.malformed is not None and self.malformed not in _MALFORMED:
            raise ValueError(f"malformed must be one of {sorted(_MALFORMED)}")
        if self.reset is not None and self.reset not in _RESETS:
            raise ValueError(f"reset must be one of {sorted(_RESETS)}")
        if self.output_tokens < 0:
            raise ValueError("output_tokens must be >= 0")
        for name in ("status", "fail_status"):
            value = getattr(self, name)
            if value is not None and not 100 <= value <= 599:
                raise ValueError(f"{name} must be an HTTP status, got {value}")


class FakeStats:
    """Thread-safe counters of what the fake provider has served.

    Attributes are updated on the server thread under a lock; read them from any thread
    (`snapshot` gives a consistent copy).

    Attributes:
        requests: Requests received (every parsed request, any path).
        by_path: Requests per path (query string removed).
        in_flight: Requests being handled right now.
        max_concurrent: Peak of ``in_flight`` since start or the last reset.
        statuses: Count of each response status sent (resets send none).
        connections: TCP connections accepted.
        open_connections: TCP connections open right now.
        last_request_headers: Headers of the last request, names lower-cased.
        last_request_json: Decoded JSON body of the last request (None if absent/invalid).
    """

    def __init__(self) -> None:
        """Start with every counter at zero."""
        self._lock = threading.Lock()
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.in_flight = 0
        self.max_concurrent = 0
        self.statuses: Counter[int] = Counter()
        self.connections = 0
        self.open_connections = 0
        self.last_request_headers: dict[str, str] = {}
        self.last_request_json: Any = None

    def reset(self) -> None:
        """Zero the counters; live gauges (in flight, open connections) are kept."""
        with self._lock:
            self.requests = 0
            self.by_path = {}
            self.max_concurrent = self.in_flight
            self.statuses = Counter()
            self.connections = 0
            self.last_request_headers = {}
            self.last_request_json = None

    reset_stats = reset

    def snapshot(self) -> dict[str, Any]:
        """Return a consistent copy of every counter."""
        with self._lock:
            return {
                "requests": self.requests,
                "by_path": dict(self.by_path),
                "in_flight": self.in_flight,
                "max_concurrent": self.max_concurrent,
                "statuses": Counter(self.statuses),
                "connections": self.connections,
                "open_connections": self.open_connections,
                "last_request_headers": dict(self.last_request_headers),
                "last_request_json": self.last_request_json,
            }

    def _begin(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.in_flight += 1
            if self.in_flight > self.max_concurrent:
                self.max_concurrent = self.in_flight
            self.last_request_headers = headers
            self.last_request_json = body

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _status(self, status: int) -> None:
        with self._lock:
            self.statuses[status] += 1

    def _connection(self, delta: int) -> None:
        with self._lock:
            if delta > 0:
                self.connections += 1
            self.open_connections += delta

    def __repr__(self) -> str:
        return f"FakeStats({self.snapshot()!r})"


# ----------------------------------------------------------------------------- error bodies


class _ErrorShape(msgspec.Struct, frozen=True):
    openai_status: int
    openai_type: str
    openai_code: str | None
    openai_message: str
    anthropic_status: int
    anthropic_type: str
    anthropic_message: str


# Real providers disagree on status and vocabulary for the same condition (an exhausted
# OpenAI quota is a 429 with type insufficient_quota; Anthropic says 402 billing_error), so
# each code carries both shapes. Keys are OpenAI codes plus Anthropic error types.
ERROR_CODES: dict[str, _ErrorShape] = {
    "rate_limit_exceeded": _ErrorShape(
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
        429,
        "rate_limit_error",
        "Number of requests has exceeded your per-minute rate limit.",
    ),
    "insufficient_quota": _ErrorShape(
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        402,
        "billing_error",
        "Your credit balance is too low to access the API.",
    ),
    "context_length_exceeded": _ErrorShape(
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
        400,
        "invalid_request_error",
        "prompt is too long: 9000 tokens > 8192 maximum",
    ),
    "invalid_api_key": _ErrorShape(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided.",
        401,
        "authentication_error",
        "invalid x-api-key",
    ),
    "permission_denied": _ErrorShape(
        403,
        "invalid_request_error",
        "permission_denied",
        "You are not allowed to use this model.",
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "model_not_found": _ErrorShape(
        404,
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
        404,
        "not_found_error",
        "model: not found",
    ),
    "server_error": _ErrorShape(
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
        500,
        "api_error",
        "Internal server error",
    ),
    "overloaded": _ErrorShape(
        503,
        "server_error",
        None,
        "The engine is currently overloaded, please try again later.",
        529,
        "overloaded_error",
        "Overloaded",
    ),
}
ERROR_CODES["rate_limit_error"] = ERROR_CODES["rate_limit_exceeded"]
ERROR_CODES["billing_error"] = ERROR_CODES["insufficient_quota"]
ERROR_CODES["authentication_error"] = ERROR_CODES["invalid_api_key"]
ERROR_CODES["permission_error"] = ERROR_CODES["permission_denied"]
ERROR_CODES["not_found_error"] = ERROR_CODES["model_not_found"]
ERROR_CODES["api_error"] = ERROR_CODES["server_error"]
ERROR_CODES["overloaded_error"] = ERROR_CODES["overloaded"]

_ANTHROPIC_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_BY_STATUS: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _error_body(fmt: str, status: int, code: str | None, message: str | None, rid: str) -> bytes:
    """Encode an error body in the path's format for ``status`` (and ``code`` if known)."""
    shape = ERROR_CODES.get(code) if code else None
    if fmt == "anthropic":
        if shape is not None:
            etype, msg = shape.anthropic_type, shape.anthropic_message
        elif code and code.endswith("_error"):
            etype, msg = code, code.replace("_", " ")
        else:
            etype = _ANTHROPIC_TYPE_BY_STATUS.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            msg = _reason(status)
        return _ENC.encode(
            {
                "type": "error",
                "error": {"type": etype, "message": message or msg},
                "request_id": rid,
            }
        )
    ocode: str | None
    if shape is not None:
        otype, ocode, msg = shape.openai_type, shape.openai_code, shape.openai_message
    else:
        otype, ocode = _OPENAI_BY_STATUS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        ocode = code or ocode
        msg = _reason(status)
    return _ENC.encode(
        {"error": {"message": message or msg, "type": otype, "param": None, "code": ocode}}
    )


# ----------------------------------------------------------------------------- HTTP helpers

_ENC = msgspec.json.Encoder()
_decode = msgspec.json.decode
_REASONS: dict[int, bytes] = {}
_LINGER_RST = struct.pack("ii", 1, 0)
_CHUNK_END = b"0\r\n\r\n"
_MAX_BODY = 32 << 20
_MAX_HEAD = 64 << 10
_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
_NOT_UTF8 = b"\xc3\x28\xff\xfe\xa0\xa1"
_NOT_UTF8_MARK = "\u2063NOTUTF8\u2063"
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
    b"</body></html>\n"
)
_WRONG_JSON = b'{"object": "unexpected", "choices": "not-a-list", "content": 42, "data": [1, 2]}'


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Site Overloaded" if status == 529 else "Unknown"


def _status_line(status: int) -> bytes:
    line = _REASONS.get(status)
    if line is None:
        line = _REASONS[status] = f"HTTP/1.1 {status} {_reason(status)}\r\n".encode("latin-1")
    return line


def _head(
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


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _count_chars(value: Any) -> int:
    """Count the characters of message text (strings and text blocks) for the token estimate."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_count_chars(item) for item in value)
    if isinstance(value, dict):
        if "text" in value:
            return _count_chars(value["text"])
        if "content" in value:
            return _count_chars(value["content"])
    return 0


def _sse_openai(obj: Any) -> bytes:
    return b"data: " + _ENC.encode(obj) + b"\n\n"


def _sse_anthropic(event: bytes, obj: Any) -> bytes:
    return b"event: " + event + b"\ndata: " + _ENC.encode(obj) + b"\n\n"


class _BadHTTP(Exception):
    """The request cannot be parsed as HTTP/1.1; answer 400 and close."""


# ----------------------------------------------------------------------------- the server


class FakeProvider:
    """A loopback HTTP server that answers like an LLM provider, shaped by a `Behaviour`.

    Args:
        behaviour: Initial behaviour (default: fast, successful, 8 output tokens).
        seed: Seed of the RNG that drives random failures and jitter.
        host: Address to bind (loopback).
        port: Port to bind; 0 picks a free one (see `url`).
    """

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Configure the server; `start` binds and serves."""
        self._behaviour = behaviour or Behaviour()
        self._rng = random.Random(seed)
        self._host = host
        self._port = port
        self.stats = FakeStats()
        self._ids = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._lock = threading.Lock()

    # -- lifecycle

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:PORT``); the APIs live under ``url + "/v1"``."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        return self._port

    @property
    def behaviour(self) -> Behaviour:
        """The current behaviour."""
        return self._behaviour

    def start(self) -> FakeProvider:
        """Bind and serve on a background thread; return self."""
        with self._lock:
            if self._thread is not None:
                return self
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._run, args=(loop,), name="routeledger-fake-provider", daemon=True
            )
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=10)
            except BaseException:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                raise
            self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Close the server and every connection, then join the thread. Idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            try:
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                self._loop = self._thread = None

    def __enter__(self) -> FakeProvider:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()

    def set_behaviour(self, behaviour: Behaviour) -> None:
        """Replace the behaviour; it takes effect for the next request."""
        self._behaviour = behaviour

    def reset_stats(self) -> None:
        """Zero the counters of `stats`."""
        self.stats.reset()

    def reseed(self, seed: int) -> None:
        """Restart the failure/jitter RNG from ``seed``."""
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"FakeProvider({where}, {self._behaviour!r})"

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._port, backlog=2048, limit=_MAX_HEAD
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        server = self._server
        if server is not None:
            server.close()
        # Abort rather than close: a graceful close waits for unsent data (a stalled or huge
        # stream) and would leave an unclosed transport behind.
        for task, writer in list(self._conns.items()):
            writer.transport.abort()
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        # Let the transports' connection_lost callbacks run so their sockets are closed.
        for _ in range(3):
            await asyncio.sleep(0)

    # -- connections

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        self.stats._connection(+1)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug here must not kill the server; tests see the log
            _log.exception("fake provider: unexpected error")
        finally:
            self.stats._connection(-1)
            self._conns.pop(task, None)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; return whether to keep the connection."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._plain_error(writer, 400, "incomplete request head")
            return False
        try:
            method, path, keep_alive, headers = _parse_head(raw)
            body = await _read_body(reader, headers)
        except _BadHTTP as exc:
            await self._plain_error(writer, 400, str(exc))
            return False
        except _TooLarge:
            await self._plain_error(writer, 413, "request body too large")
            return False
        parsed: Any = None
        if body:
            with contextlib.suppress(msgspec.DecodeError):
                parsed = _decode(body)
        self.stats._begin(path, headers, parsed)
        try:
            return await self._respond(writer, method, path, headers, body, parsed, keep_alive)
        finally:
            self.stats._end()

    async def _plain_error(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = _error_body("openai", status, None, message, "")
        self.stats._status(status)
        writer.write(_head(status, b"application/json", length=len(body), close=True) + body)
        await writer.drain()

    # -- requests

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        parsed: Any,
        keep_alive: bool,
    ) -> bool:
        beh = self._behaviour
        # Exactly two draws per request, whatever the behaviour, so that the failure sequence
        # of a seed does not depend on which knobs are set.
        fail_roll = self._rng.random()
        jitter = self._rng.random() * beh.jitter_ms
        n = self._next_id()

        if path == "/v1/chat/completions":
            fmt, kind = "openai", "chat"
        elif path == "/v1/messages":
            fmt, kind = "anthropic", "chat"
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            fmt = "anthropic" if "anthropic-version" in headers else "openai"
            kind = "models"
        else:
            fmt, kind = "openai", "unknown"
        rid = f"req_{n:024x}"
        extra = (b"request-id: " if fmt == "anthropic" else b"x-request-id: ") + rid.encode()
        extra += b"\r\n"
        mid_body = beh.reset == "mid_body"

        if kind == "unknown":
            message = f"Unknown request URL: {method} {path}"
            return await self._send_error(
                writer, fmt, 404, "unknown_url", message, rid, extra, keep_alive
            )
        if method != ("GET" if kind == "models" else "POST"):
            message = f"Method {method} not allowed on {path}"
            return await self._send_error(writer, fmt, 405, None, message, rid, extra, keep_alive)

        status: int | None = beh.status
        if status is None and fail_roll < beh.fail_rate:
            status = beh.fail_status
        if status is None and beh.error_code is not None:
            shape = ERROR_CODES.get(beh.error_code)
            if shape is None:
                status = 400
            else:
                status = shape.anthropic_status if fmt == "anthropic" else shape.openai_status
        problem = _validate(fmt, body, parsed) if kind == "chat" else None
        stream = kind == "chat" and problem is None and parsed.get("stream") is True
        ok = status is None or status < 400
        # A successful stream waits before its first chunk (in _stream); all else waits here.
        deferred = stream and ok and beh.malformed is None and beh.reset != "before_response"
        delay_ms = jitter + (beh.ttft_ms if stream and beh.ttft_ms is not None else beh.latency_ms)
        if delay_ms > 0 and not deferred:
            await asyncio.sleep(delay_ms / 1000)

        if beh.reset == "before_response":
            _reset(writer)
            return False

        if status is not None and status >= 400:
            if status in (429, 503, 529):
                if beh.retry_after is not None:
                    extra += b"retry-after: " + beh.retry_after.encode("latin-1") + b"\r\n"
                if beh.retry_after_ms is not None:
                    extra += b"retry-after-ms: " + str(beh.retry_after_ms).encode() + b"\r\n"
            return await self._send_error(
                writer, fmt, status, beh.error_code, None, rid, extra, keep_alive, mid_body
            )
        status = status or 200

        if kind == "models":
            if beh.malformed is not None:
                return await self._malformed(writer, beh, fmt, False, "", [], extra, keep_alive)
            return await self._models(writer, beh, fmt, path, status, extra, keep_alive, rid)

        if problem is not None:
            return await self._send_error(
                writer, fmt, 400, None, problem, rid, extra, keep_alive, mid_body
            )

        model = str(parsed.get("model"))
        input_tokens = _input_tokens(parsed)
        texts = _texts(beh)
        if beh.malformed == "not_utf8" and texts:
            texts = [_NOT_UTF8_MARK, *texts[1:]]
        if beh.malformed is not None and (beh.malformed != "not_utf8" or not stream):
            return await self._malformed(writer, beh, fmt, stream, model, texts, extra, keep_alive)
        if stream:
            return await self._stream(
                writer,
                beh,
                fmt,
                parsed,
                n,
                model,
                input_tokens,
                texts,
                extra,
                keep_alive,
                delay_ms,
                status,
            )
        payload = _ENC.encode(
            _completion(fmt, n, model, "".join(texts), input_tokens, beh.output_tokens)
        )
        return await self._send(
            writer, status, b"application/json", payload, extra, keep_alive, mid_body
        )

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: bytes,
        payload: bytes,
        extra: bytes,
        keep_alive: bool,
        mid_body: bool = False,
    ) -> bool:
        self.stats._status(status)
        head = _head(status, content_type, length=len(payload), close=not keep_alive, extra=extra)
        if mid_body:
            writer.write(head + payload[: max(1, len(payload) // 2)])
            await writer.drain()
            await _reset_soon(writer)
            return False
        writer.write(head + payload)
        await writer.drain()
        return keep_alive

    async def _send_error(
        self,
        writer: asyncio.StreamWriter,
        fmt: str,
        status: int,
        code: str | None,
        message: str | None,
        rid: str,
        extra: bytes,
        keep_alive: bool,
        mid_body: bool = False,
    ) -> bool:
        payload = _error_body(fmt, status, code, message, rid)
        return await self._send(
            writer, status, b"application/json", payload, extra, keep_alive, mid_body
        )

    async def _models(
        self,
        writer: asyncio.StreamWriter,
        beh: Behaviour,
        fmt: str,
        path: str,
        status: int,
        extra: bytes,
        keep_alive: bool,
        rid: str,
    ) -> bool:
        items = [
            {
                "id": name,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "routeledger-fake",
                "type": "model",
                "display_name": name,
                "created_at": "2023-11-14T22:13:20Z",
            }
            for name in beh.models
        ]
        if path != "/v1/models":
            wanted = path.removeprefix("/v1/models/")
            found = [item for item in items if item["id"] == wanted]
            if not found:
                return await self._send_error(
                    writer, fmt, 404, "model_not_found", None, rid, extra, keep_alive
                )
            payload = _ENC.encode(found[0])
        else:
            payload = _ENC.encode(
                {
                    "object": "list",
                    "data": items,
                    "has_more": False,
                    "first_id": items[0]["id"] if items else None,
                    "last_id": items[-1]["id"] if items else None,
                }
            )
        mid_body = beh.reset == "mid_body"
        return await self._send(
            writer, status, b"application/json", payload, extra, keep_alive, mid_body
        )

    async def _malformed(
        self,
        writer: asyncio.StreamWriter,
        beh: Behaviour,
        fmt: str,
        stream: bool,
        model: str,
        texts: list[str],
        extra: bytes,
        keep_alive: bool,
    ) -> bool:
        kind = beh.malformed
        if kind == "html":
            return await self._send(
                writer, 200, b"text/html; charset=utf-8", _HTML, extra, keep_alive
            )
        if kind == "wrong_json":
            if stream:
                events = b"data: [1, 2, 3]\n\n" * 3 + (
                    b"data: [DONE]\n\n" if fmt == "openai" else b"event: message_stop\ndata: {}\n\n"
                )
                return await self._send(
                    writer, 200, b"text/event-stream", events, extra, keep_alive
                )
            return await self._send(
                writer, 200, b"application/json", _WRONG_JSON, extra, keep_alive
            )
        if kind == "not_utf8":
            payload = _ENC.encode(_completion(fmt, 0, model, "".join(texts), 1, len(texts)))
            payload = payload.replace(_NOT_UTF8_MARK.encode(), _NOT_UTF8)
            if _NOT_UTF8 not in payload:
                payload += _NOT_UTF8
            return await self._send(writer, 200, b"application/json", payload, extra, keep_alive)
        # "huge": a chunked body written piece by piece so neither side needs it in memory.
        self.stats._status(200)
        ctype = b"text/event-stream" if stream else b"application/json"
        writer.write(_head(200, ctype, length=None, close=True, extra=extra))
        if stream:
            prefix = b'data: {"choices": [{"index": 0, "delta": {"content": "'
        else:
            prefix = b'{"object": "chat.completion", "choices": [{"message": {"content": "'
        writer.write(_chunk(prefix))
        piece = _chunk(b"x" * (1 << 20))
        for _ in range(max(1, beh.huge_bytes >> 20)):
            writer.write(piece)
            await writer.drain()
        writer.write(_chunk(b'"}}]}\n\n' if stream else b'"}}]}'))
        writer.write(_CHUNK_END)
        await writer.drain()
        return False

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        beh: Behaviour,
        fmt: str,
        parsed: dict[str, Any],
        n: int,
        model: str,
        input_tokens: int,
        texts: list[str],
        extra: bytes,
        keep_alive: bool,
        delay_ms: float,
        status: int,
    ) -> bool:
        if fmt == "openai":
            options = parsed.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            pre, chunks, post, error_event = _openai_stream(
                n, model, texts, input_tokens, beh.output_tokens, usage
            )
        else:
            pre, chunks, post, error_event = _anthropic_stream(
                n, model, texts, input_tokens, beh.output_tokens
            )
        if beh.malformed == "not_utf8":
            mark = _NOT_UTF8_MARK.encode()
            chunks = [c.replace(mark, _NOT_UTF8) for c in chunks]
            if not chunks:
                pre = pre + b"data: " + _NOT_UTF8 + b"\n\n"
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        self.stats._status(status)
        truncate = beh.truncate_after_chunks
        # A truncated stream closes the connection, so it must not be offered for reuse.
        closing = not keep_alive or (truncate is not None and truncate <= len(chunks))
        head = _head(
            status,
            b"text/event-stream; charset=utf-8",
            length=None,
            close=closing,
            extra=extra + b"cache-control: no-cache\r\n",
        )

        if beh.reset == "mid_body":
            writer.write(head + _chunk(pre + b"".join(chunks[:1])))
            await writer.drain()
            await _reset_soon(writer)
            return False

        pending: list[bytes] = [head, _chunk(pre)] if pre else [head]
        total = len(chunks)
        gap = beh.inter_token_ms / 1000

        async def flush() -> None:
            writer.write(b"".join(pending))
            pending.clear()
            await writer.drain()

        for k in range(total + 1):
            # k text chunks have been queued; act on the per-boundary behaviours.
            if k == beh.truncate_after_chunks:
                pending.append(_CHUNK_END)
                await flush()
                return False
            if k == beh.error_event_after_chunks:
                pending.append(_chunk(error_event))
                pending.append(_CHUNK_END)
                await flush()
                return not closing
            if k == beh.stall_after_chunks and beh.stall_ms > 0:
                await flush()
                await asyncio.sleep(beh.stall_ms / 1000)
            if k == total:
                break
            if k > 0 and gap > 0:
                await flush()
                await asyncio.sleep(gap)
            pending.append(_chunk(chunks[k]))
        pending.append(_chunk(post))
        pending.append(_CHUNK_END)
        await flush()
        return not closing


# ----------------------------------------------------------------------------- wire shapes


def _parse_head(raw: bytes) -> tuple[str, str, bool, dict[str, str]]:
    try:
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError as exc:
        raise _BadHTTP("malformed request line") from exc
    if not version.startswith("HTTP/1."):
        raise _BadHTTP(f"unsupported protocol {version!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadHTTP("malformed header line")
        headers[name.lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    path = target.split("?", 1)[0]
    return method, path, keep_alive, headers


class _TooLarge(Exception):
    """The request body exceeds the limit."""


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise _BadHTTP("malformed chunk size") from exc
            if length == 0:
                # Trailers end with an empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            size += length
            if size > _MAX_BODY:
                raise _TooLarge
            parts.append(await reader.readexactly(length))
            await reader.readexactly(2)
    value = headers.get("content-length")
    if value is None:
        return b""
    try:
        length = int(value)
    except ValueError as exc:
        raise _BadHTTP("malformed content-length") from exc
    if length < 0:
        raise _BadHTTP("negative content-length")
    if length > _MAX_BODY:
        raise _TooLarge
    return await reader.readexactly(length) if length else b""


def _validate(fmt: str, body: bytes, parsed: Any) -> str | None:
    """Return why the request body is rejected (400), or None."""
    if not body:
        return "missing request body: expected a JSON object"
    if not isinstance(parsed, dict):
        return (
            "request body is not a JSON object"
            if parsed is not None
            else ("request body is not valid JSON")
        )
    if not isinstance(parsed.get("model"), str):
        return "model: field required (a string)"
    if not isinstance(parsed.get("messages"), list):
        return "messages: field required (a list)"
    if fmt == "anthropic" and not isinstance(parsed.get("max_tokens"), int):
        return "max_tokens: Field required"
    return None


def _input_tokens(parsed: dict[str, Any]) -> int:
    chars = _count_chars(parsed.get("messages")) + _count_chars(parsed.get("system"))
    return max(1, (chars + 3) // 4)


def _texts(beh: Behaviour) -> list[str]:
    """Split the reply into the text chunks of a stream (joined, the JSON reply)."""
    count = beh.output_tokens
    if beh.content is None:
        return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(count)]
    content = beh.content
    if not content:
        return []
    pieces = max(1, min(count, len(content)))
    step, extra = divmod(len(content), pieces)
    out: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + step + (1 if i < extra else 0)
        out.append(content[start:end])
        start = end
    return out


def _openai_id(n: int) -> str:
    return f"chatcmpl-fake{n:020x}"


def _anthropic_id(n: int) -> str:
    return f"msg_01Fake{n:018x}"


def _completion(
    fmt: str, n: int, model: str, text: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    if fmt == "anthropic":
        return {
            "id": _anthropic_id(n),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
    return {
        "id": _openai_id(n),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_routeledger_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _openai_stream(
    n: int, model: str, texts: list[str], input_tokens: int, output_tokens: int, usage: bool
) -> tuple[bytes, list[bytes], bytes, bytes]:
    """Return (preamble, one event per text chunk, epilogue, error event) of an OpenAI stream."""
    base: dict[str, Any] = {
        "id": _openai_id(n),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_routeledger_fake",
    }
    if usage:
        base["usage"] = None

    def event(delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse_openai({**base, "choices": [choice]})

    pre = event({"role": "assistant", "content": "", "refusal": None}, None)
    chunks = [event({"content": text}, None) for text in texts]
    post = event({}, "stop")
    if usage:
        totals = {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        post += _sse_openai({**base, "choices": [], "usage": totals})
    post += b"data: [DONE]\n\n"
    error = _sse_openai(
        {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    )
    return pre, chunks, post, error


def _anthropic_stream(
    n: int, model: str, texts: list[str], input_tokens: int, output_tokens: int
) -> tuple[bytes, list[bytes], bytes, bytes]:
    """Return (preamble, one event per text chunk, epilogue, error event) of an Anthropic stream."""
    message: dict[str, Any] = {
        "id": _anthropic_id(n),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    pre = (
        _sse_anthropic(b"message_start", {"type": "message_start", "message": message})
        + _sse_anthropic(
            b"content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + _sse_anthropic(b"ping", {"type": "ping"})
    )
    chunks = [
        _sse_anthropic(
            b"content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in texts
    ]
    post = (
        _sse_anthropic(b"content_block_stop", {"type": "content_block_stop", "index": 0})
        + _sse_anthropic(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
        + _sse_anthropic(b"message_stop", {"type": "message_stop"})
    )
    error = _sse_anthropic(
        b"error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    return pre, chunks, post, error


# ----------------------------------------------------------------------------- resets


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


async def _reset_soon(writer: asyncio.StreamWriter) -> None:
    # A short pause lets the client read what was sent before the RST discards its buffers.
    await asyncio.sleep(0.02)
    _reset(writer)
