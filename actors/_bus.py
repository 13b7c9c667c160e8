"""Callbacks for the runtime's named events, run on one dispatcher thread.

User callbacks never run on an actor's thread (a slow callback must not stall routing) nor
on the caller's. A callback that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from routeledger.events import (
    EVENT_TYPES,
    Event,
    FallbackExhausted,
    FallbackSucceeded,
    ProviderFailed,
    ProviderRecovered,
    ProviderUnhealthy,
    RequestCompleted,
    RequestError,
    event_tag,
)

__all__ = ["NAMED_EVENTS", "EventBus"]

log = logging.getLogger("routeledger")

NAMED_EVENTS: dict[str, type[Event]] = {
    "complete": RequestCompleted,
    "fallback_success": FallbackSucceeded,
    "fallback_exhausted": FallbackExhausted,
    "provider_unhealthy": ProviderUnhealthy,
    "provider_recovered": ProviderRecovered,
    "provider_failed": ProviderFailed,
}
"""The original's event names and the event each one fires on; any wire tag works too."""

_STOP = object()


class EventBus:
    """Runs callbacks subscribed by event name, in event order, on a daemon thread."""

    def __init__(self) -> None:
        self._subscribers: dict[type[Event], list[Callable[[Any], None]]] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def on(self, name: str, callback: Callable[[Any], None]) -> None:
        """Call ``callback(event)`` for every event called ``name``."""
        event_type = NAMED_EVENTS.get(name) or EVENT_TYPES.get(name)
        if event_type is None:
            known = sorted(NAMED_EVENTS) + sorted(EVENT_TYPES)
            raise RequestError(f"unknown event name {name!r} (known: {', '.join(known)})")
        with self._lock:
            self._subscribers.setdefault(event_type, []).append(callback)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="routeledger-callbacks", daemon=True
                )
                self._thread.start()

    def publish(self, events: Iterable[Event]) -> None:
        """Queue the callbacks of ``events`` (cheap when nobody subscribed)."""
        subs = self._subscribers
        if not subs:
            return
        for event in events:
            callbacks = subs.get(type(event))
            if callbacks:
                self._queue.put((callbacks, event))

    def close(self, timeout: float = 5.0) -> None:
        """Run the queued callbacks, then stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            callbacks, event = item
            for callback in list(callbacks):
                try:
                    callback(event)
                except Exception:
                    log.exception("callback for %s raised", event_tag(event))
