"""A CancelScope stops one request's HTTP exchange from another thread, and only that one."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from support import wait_for

from routeledger.actors._clock import SystemClock
from routeledger.actors.wire import CancelScope
from routeledger.actors.wire._cancel import cancellable_transport


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accept connections on 127.0.0.1 and never answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


def call_in_thread(
    client: httpx.Client, url: str, scope: CancelScope
) -> tuple[threading.Thread, list[BaseException]]:
    """Start a GET of ``url`` in ``scope`` on a thread; its error lands in the list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scope.call(lambda: client.get(url, timeout=30))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def in_flight(scope: CancelScope) -> bool:
    """Return whether the scope has a socket in use (the call is blocked reading)."""
    return scope._socket is not None


def test_cancel_ends_a_read_blocked_on_a_silent_server(silent_port: int) -> None:
    """A thread blocked reading a silent server's answer fails at once on cancel."""
    client = httpx.Client(transport=cancellable_transport(httpx.Limits()), trust_env=False)
    scope = CancelScope()
    thread, errors = call_in_thread(client, f"http://127.0.0.1:{silent_port}/", scope)
    wait_for(lambda: in_flight(scope), "the call blocked in a read")
    scope.cancel("cancelled")
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], httpx.TransportError)
    client.close()


def test_cancelling_one_scope_leaves_another_request_alone(silent_port: int) -> None:
    """Two requests on one client: cancelling the first does not touch the second."""
    client = httpx.Client(transport=cancellable_transport(httpx.Limits()), trust_env=False)
    first, second = CancelScope(), CancelScope()
    t1, e1 = call_in_thread(client, f"http://127.0.0.1:{silent_port}/", first)
    t2, e2 = call_in_thread(client, f"http://127.0.0.1:{silent_port}/", second)
    wait_for(lambda: in_flight(first) and in_flight(second), "both calls blocked")
    first.cancel("cancelled")
    t1.join(timeout=5)
    assert not t1.is_alive() and e1
    assert t2.is_alive() and not e2
    second.cancel("shutdown")
    t2.join(timeout=5)
    assert not t2.is_alive()
    client.close()


def test_a_cancelled_scope_refuses_new_connections() -> None:
    """A call made in an already-cancelled scope fails before connecting."""
    client = httpx.Client(transport=cancellable_transport(httpx.Limits()), trust_env=False)
    scope = CancelScope()
    scope.cancel("shutdown")
    with pytest.raises(httpx.ConnectError):
        scope.call(lambda: client.get("http://127.0.0.1:9/", timeout=5))
    assert scope.reason == "shutdown"
    client.close()


def test_a_cancelled_scope_ends_its_sleep_on_the_real_clock() -> None:
    """A pause on the real clock ends when the scope is cancelled from another thread."""
    scope = CancelScope()
    done = threading.Event()

    def sleeper() -> None:
        scope.sleep(SystemClock(), 30)
        done.set()

    threading.Thread(target=sleeper, daemon=True).start()
    scope.cancel("cancelled")
    assert done.wait(5)
