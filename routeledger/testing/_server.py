"""The fake provider's server: an asyncio HTTP/1.1 server on its own thread.

`FakeProvider` runs its own event loop in a background thread, so latencies and stalls never
block other connections and hundreds of keep-alive connections are served at once. Requests
are parsed with h11 and answers written as raw bytes (`routeledger.testing._http` says why);
what is answered is decided in `routeledger.testing._answer`.

Randomness is deterministic: a ``random.Random(seed)`` is drawn exactly twice per request
(failure roll, then jitter) in request arrival order.

The server also keeps its own rate limit when told to (``Behaviour.rate_limit_requests``): a
sliding window of the chat requests it admitted, and a 429 with the provider's rate-limit
headers beyond it. Refused requests do not count, as with the real providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import random
import socket
import threading
import time
from collections import deque
from typing import Any, cast

import msgspec

from routeledger.testing._answer import answer, format_of
from routeledger.testing._anthropic import ANTHROPIC
from routeledger.testing._behaviour import Behaviour
from routeledger.testing._exchange import Exchange
from routeledger.testing._http import (
    MAX_HEAD,
    BadRequest,
    Request,
    ShapedWriter,
    head,
    read_request,
)
from routeledger.testing._limits import OwnLimits
from routeledger.testing._openai import OPENAI
from routeledger.testing._stats import FakeStats

__all__ = ["FakeProvider"]

_log = logging.getLogger(__name__)


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
        self._limits: OwnLimits | None = None
        self._limits_of: Behaviour | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._lock = threading.Lock()
        # Monotonic times of the chat requests admitted under Behaviour.rate_limit_requests.
        self._admitted: deque[float] = deque()

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
            self._on_connection, self._host, self._port, backlog=2048, limit=MAX_HEAD
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
        pending = b""
        try:
            while True:
                try:
                    request, pending = await read_request(reader, pending)
                except BadRequest as exc:
                    await self._plain_error(writer, exc.status, str(exc))
                    break
                if request is None or not await self._serve(request, writer):
                    break
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

    async def _serve(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; return whether to keep the connection."""
        parsed: Any = None
        if request.body:
            with contextlib.suppress(msgspec.DecodeError):
                parsed = msgspec.json.decode(request.body)
        self.stats._begin(request.path, request.headers, parsed)
        try:
            beh = self._behaviour
            # Exactly two draws per request, whatever the behaviour, so that the failure
            # sequence of a seed does not depend on which knobs are set.
            fail_roll = self._rng.random()
            jitter_ms = self._rng.random() * beh.jitter_ms
            self._ids += 1
            fmt, kind = format_of(request.path, request.headers)
            if beh.headers or beh.trickle_head_ms > 0 or beh.trickle_ms > 0:
                extra = b"".join(
                    f"{name}: {value}\r\n".encode("latin-1") for name, value in beh.headers.items()
                )
                shaped = ShapedWriter(
                    writer, extra=extra, head_ms=beh.trickle_head_ms, body_ms=beh.trickle_ms
                )
                # Offers what answering uses of a StreamWriter (see ShapedWriter).
                writer = cast(asyncio.StreamWriter, shaped)
            exchange = Exchange(
                request=request,
                parsed=parsed,
                behaviour=beh,
                writer=writer,
                stats=self.stats,
                n=self._ids,
                fail_roll=fail_roll,
                jitter_ms=jitter_ms,
                fmt=fmt,
                limits=self._own_limits(beh),
            )
            if kind == "chat" and beh.rate_limit_requests is not None:
                refused = self._over_limit(exchange, beh.rate_limit_requests)
                if refused:
                    return await exchange.send_error(429, "rate_limit_exceeded", None)
            return await answer(exchange, kind)
        finally:
            self.stats._end()

    def _own_limits(self, beh: Behaviour) -> OwnLimits | None:
        """Return the behaviour's rpm/tpm buckets (new, full ones when it changed)."""
        if beh.rpm is None and beh.tpm is None:
            return None
        if self._limits is None or self._limits_of is not beh:
            self._limits, self._limits_of = OwnLimits(beh.rpm, beh.tpm), beh
        return self._limits

    def _over_limit(self, ex: Exchange, limit: int) -> bool:
        """Admit ``ex`` under the fake's own limit, or set the headers of its 429 and refuse."""
        beh = ex.behaviour
        now = time.monotonic()
        window = self._admitted
        while window and window[0] <= now - beh.rate_limit_window_s:
            window.popleft()
        if len(window) < limit:
            window.append(now)
            return False
        wait_s = window[0] + beh.rate_limit_window_s - now
        ms = max(1, math.ceil(wait_s * 1000))
        lines = [ex.fmt.request_id_header + ex.rid.encode()]
        if not beh.rate_limit_reset_only:
            lines.append(b"retry-after: %d" % math.ceil(ms / 1000))
            lines.append(b"retry-after-ms: %d" % ms)
        if ex.fmt is ANTHROPIC:
            reset = datetime.datetime.fromtimestamp(time.time() + ms / 1000, datetime.UTC)
            stamp = reset.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            lines.append(b"anthropic-ratelimit-requests-limit: %d" % limit)
            lines.append(b"anthropic-ratelimit-requests-remaining: 0")
            lines.append(b"anthropic-ratelimit-requests-reset: " + stamp.encode())
        else:
            lines.append(b"x-ratelimit-limit-requests: %d" % limit)
            lines.append(b"x-ratelimit-remaining-requests: 0")
            lines.append(b"x-ratelimit-reset-requests: %dms" % ms)
        ex.extra = b"".join(line + b"\r\n" for line in lines)
        return True

    async def _plain_error(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = OPENAI.error_body(status, None, message, "")
        self.stats._status(status)
        writer.write(head(status, b"application/json", length=len(body), close=True) + body)
        await writer.drain()
