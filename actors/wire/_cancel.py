"""Cancelling one request's HTTP exchange from another thread.

httpx's synchronous client has no way to abort a call in flight: a thread blocked reading a
stalled provider's answer stays blocked until the read timeout. A :class:`CancelScope`
gives that power per request. The request's thread enters the scope
(:meth:`CancelScope.call`) around its HTTP calls; every socket read and write of the
provider's connections (through :class:`CancellableBackend`, the network backend of every
client :func:`~routeledger.actors.wire.make_client` builds) notes the socket in use in the
scope of the thread's current request. :meth:`CancelScope.cancel`, from any thread, shuts that
socket down: the blocked read returns at once, the exchange fails, and the connection is
discarded (never reused). Later reads and writes in a cancelled scope fail before touching
the socket, and its pauses (:meth:`CancelScope.sleep`) end early.

``shutdown()`` (not ``close()``) is what wakes a thread blocked in ``recv`` on Linux.

The same streams enforce time bounds that httpx cannot: its timeouts are per read, so a
server trickling a byte every 100 ms never trips a 2 s timeout. Every read, write and connect
is cut to what is left of the tightest of two bounds, and fails with a timeout naming it once
none is left: the current exchange's phase (:func:`time_bound`: the headers within
``timeout_s``, a stream's first chunk, the gap between two chunks) and the request's deadline
(:attr:`CancelScope.deadline`). Both are ``time.monotonic()`` instants: sockets live on real
time, whatever clock the runtime was given.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import socket
import threading
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import httpcore
import httpx

from routeledger.actors._clock import SystemClock

if typing.TYPE_CHECKING:
    from routeledger.actors._clock import Clock

__all__ = ["CancelScope", "CancellableBackend", "cancellable_transport", "time_bound"]

_T = TypeVar("_T")

_current: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar(
    "routeledger_cancel_scope", default=None
)


class _Bound(NamedTuple):
    """An instant (``time.monotonic()``) the current I/O must end by, and what it stands for."""

    at: float
    what: str


_bound: contextvars.ContextVar[_Bound | None] = contextvars.ContextVar(
    "routeledger_time_bound", default=None
)


@contextlib.contextmanager
def time_bound(at: float | None, what: str) -> Iterator[None]:
    """Bound every socket read, write and connect inside the block by the instant ``at``.

    ``what`` is the message of the timeout raised once the bound is reached ("no response
    headers within 2 s"). An enclosing, tighter bound still holds. Never hold the block
    across a ``yield``: the bound belongs to the thread's context, and a generator's caller
    may resume it from another thread.
    """
    outer = _bound.get()
    if at is None or (outer is not None and outer.at <= at):
        yield
        return
    token = _bound.set(_Bound(at, what))
    try:
        yield
    finally:
        _bound.reset(token)


def _limit(scope: CancelScope | None, timeout: float | None) -> tuple[float | None, str]:
    """Return ``timeout`` cut to what the bounds leave, and what the cut stands for ("" if
    the cut changed nothing).

    Raises:
        httpcore.TimeoutException: A bound has passed (``ReadTimeout``; the caller re-raises
            it as its own kind).
    """
    bound = _bound.get()
    at, what = (bound.at, bound.what) if bound is not None else (math.inf, "")
    if scope is not None and scope.deadline is not None and scope.deadline < at:
        at, what = scope.deadline, "the request's deadline passed"
    if at == math.inf:
        return timeout, ""
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout(what)
    if timeout is not None and timeout <= left:
        return timeout, ""
    return left, what


class CancelScope:
    """One request's cancellation: its reason once cancelled, and the socket it is using.

    On the request path (every socket read and write) this costs two attribute stores and a
    check: no lock. The GIL orders them: a reader notes its socket, then checks the reason;
    :meth:`cancel` sets the reason, then shuts down the socket noted. Whichever comes second
    sees the other's write, so a read is never left blocked on a cancelled scope.
    """

    __slots__ = ("_event", "_socket", "deadline", "reason")

    def __init__(self) -> None:
        # Made by the first pause only: most requests never pause, and an Event costs more
        # to build than the rest of the scope.
        self._event: threading.Event | None = None
        self._socket: socket.socket | None = None
        self.reason: str | None = None
        """``None`` until cancelled; then why (``"cancelled"`` or ``"shutdown"``)."""
        self.deadline: float | None = None
        """The request's deadline as a ``time.monotonic()`` instant: no socket read or write
        of the request (a stream's included) runs past it."""

    @property
    def cancelled(self) -> bool:
        """Return whether :meth:`cancel` was called."""
        return self.reason is not None

    def cancel(self, reason: str) -> None:
        """Cancel: shut down the socket in use (if any) and end pauses; idempotent."""
        if self.reason is not None:
            return
        self.reason = reason
        event = self._event
        if event is not None:
            event.set()
        sock = self._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call ``fn(*args)`` with this scope as the current thread's (its HTTP calls' scope)."""
        token = _current.set(self)
        try:
            return fn(*args)
        finally:
            _current.reset(token)

    def sleep(self, clock: Clock, seconds: float) -> None:
        """Sleep ``seconds`` on ``clock``, ending early if the scope is cancelled.

        On the real clock the sleep is a wait the cancel ends; on any other clock it is the
        clock's own ``sleep`` (a virtual clock's is the passing of time, not a wait).
        """
        if seconds <= 0 or self.cancelled:
            return
        if type(clock) is SystemClock:
            event = self._event = self._event or threading.Event()
            if self.reason is None:  # again: a cancel may have come before the event existed
                event.wait(seconds)
        else:
            clock.sleep(seconds)


class _Stream(httpcore.NetworkStream):
    """A connection's stream whose blocking calls the current scope can interrupt."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        sock = inner.get_extra_info("socket")
        self._sock: socket.socket | None = sock if isinstance(sock, socket.socket) else None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        scope = _current.get()
        timeout, bounded = _limit(scope, timeout)
        try:
            if scope is None or self._sock is None:
                return self._inner.read(max_bytes, timeout)
            scope._socket = self._sock
            try:
                if scope.reason is not None:
                    raise httpcore.ReadError("the request was cancelled")
                return self._inner.read(max_bytes, timeout)
            finally:
                scope._socket = None
        except httpcore.ReadTimeout:
            if bounded:
                raise httpcore.ReadTimeout(bounded) from None
            raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        scope = _current.get()
        try:
            timeout, bounded = _limit(scope, timeout)
        except httpcore.ReadTimeout as exc:
            raise httpcore.WriteTimeout(str(exc)) from None
        try:
            if scope is None or self._sock is None:
                self._inner.write(buffer, timeout)
                return
            scope._socket = self._sock
            try:
                if scope.reason is not None:
                    raise httpcore.WriteError("the request was cancelled")
                self._inner.write(buffer, timeout)
            finally:
                scope._socket = None
        except httpcore.WriteTimeout:
            if bounded:
                raise httpcore.WriteTimeout(bounded) from None
            raise

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class CancellableBackend(httpcore.NetworkBackend):
    """httpcore's synchronous backend, with streams a :class:`CancelScope` can interrupt."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        scope = _current.get()
        if scope is not None and scope.cancelled:
            raise httpcore.ConnectError("the request was cancelled")
        try:
            timeout, _ = _limit(scope, timeout)
        except httpcore.ReadTimeout as exc:
            raise httpcore.ConnectTimeout(str(exc)) from None
        return _Stream(
            self._inner.connect_tcp(
                host,
                port,
                timeout=timeout,
                local_address=local_address,
                socket_options=socket_options,
            )
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(
            self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def cancellable_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """Return an httpx transport whose connections use :class:`CancellableBackend`.

    httpx does not take a network backend; its transport's connection pool does. The pool
    is replaced by an equal one built with ours (no proxy: ``trust_env`` is off for our
    clients). ``tests/test_wire_cancel.py`` proves the swap still reaches the sockets, so an
    httpx release that changes this fails there, not silently.
    """
    transport = httpx.HTTPTransport(limits=limits, trust_env=False)
    old = transport._pool
    transport._pool = httpcore.ConnectionPool(
        ssl_context=old._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=CancellableBackend(),
    )
    old.close()
    return transport
