"""The observer hook of the threaded interpreter: who may watch a request's life, and how.

:class:`~routeledger._interpreter.ThreadedInterpreter` has an ``observer`` (``None`` by
default, which costs one ``is None`` check a request and one an effect that matters). When
set, each request gets its own :class:`RequestWatch`, made on the caller's thread when the
request starts, and told what the failover policy decided and recorded, in order, on the
thread running the request. :mod:`routeledger.otel` implements it with spans.

A watch must never raise: it is called in the middle of the policy's effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from routeledger.actors._failover import Record
    from routeledger.actors._messages import RouteQuery

__all__ = ["RequestObserver", "RequestWatch"]


class RequestWatch(Protocol):
    """What one request's watcher is told."""

    def chose(self, answer: Any) -> None:
        """Take the router's answer to a ``Choose``: a Decision, a Backoff or None (saturated).

        Not called when choosing raised; the policy records that end next.
        """

    def recorded(self, record: Record) -> None:
        """Take a ``Record``: an attempt's outcome, the request's end, or both."""


class RequestObserver(Protocol):
    """Makes a watch for each request."""

    def request_started(self, query: RouteQuery) -> RequestWatch | None:
        """Return the watch of a request starting now (on the caller's thread), or None."""
