"""The routing desk: the supervisor's routing state, entered under one lock from any thread.

Deciding where an attempt goes takes about 20 µs of Python; a pykka ``ask`` of the supervisor
costs 150-200 µs here (two thread hand-offs). So the request path does not ask: a caller's
thread enters the desk, under its lock, to decide (and reserve the slot) and to record how an
attempt ended. Everything else the supervisor actor does on its own thread (operator changes,
circuit transitions from the health actor, supervision of the provider actors) enters the
same lock, so the router still sees one change at a time and the events it makes are in the
order it made them.

What the router emits, and the outcomes for the health actor, gather on the desk and go out
in one ``tell`` each at most every ``flush_interval_s`` (a flusher thread, idle while nothing
is pending), or at once when ``BATCH_MAX`` outcomes wait or :meth:`RoutingDesk.send` is
called (``flush()`` does, through the supervisor). Waking the log writer and the health actor
once per batch, not per request, keeps their threads off the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pykka

from routeledger.actors._protocol import Append, RecordOutcomes
from routeledger.events import RuntimeClosed

if TYPE_CHECKING:
    from routeledger.actors._bus import EventBus
    from routeledger.actors._health import HealthActor
    from routeledger.actors._messages import (
        Backoff,
        Decision,
        Outcome,
        RequestEnded,
        RouteQuery,
    )
    from routeledger.actors._router import Router
    from routeledger.actors._writer import LogWriterActor
    from routeledger.events import Event

__all__ = ["BATCH_MAX", "BufferedEmitter", "RoutingDesk"]

log = logging.getLogger("routeledger")

BATCH_MAX = 256
"""Outcomes gathered at most before they go to the health actor regardless of time."""


class BufferedEmitter:
    """What the router emits through: events gather, then go to the log writer in one tell
    (and to the callbacks), in the order they were made. Used under the desk's lock."""

    def __init__(self, writer: pykka.ActorRef[LogWriterActor], bus: EventBus) -> None:
        self._tell = writer.tell
        self._publish = bus.publish
        self._pending: list[Event] = []

    def __call__(self, events: list[Event]) -> None:
        self._pending.extend(events)

    @property
    def pending(self) -> bool:
        """Return whether events wait to be sent."""
        return bool(self._pending)

    def take(self) -> list[Event]:
        """Return what gathered since the last call, and forget it."""
        events, self._pending = self._pending, []
        return events

    def send(self) -> None:
        """Send what gathered since the last call."""
        events = self.take()
        if events:
            self.deliver(events)

    def deliver(self, events: list[Event]) -> None:
        """Send ``events`` to the log writer and the callbacks."""
        try:
            self._tell(Append(events))
        except pykka.ActorDeadError:
            log.error("log writer is gone; %d events not recorded", len(events))
        self._publish(events)


class RoutingDesk:
    """The router and what it gathers, behind one lock (see the module docstring).

    Args:
        router: The routing state and decisions.
        emit: The emitter the router was built with.
        flush_interval_s: How long events and outcomes may wait before they are sent.
    """

    def __init__(
        self, router: Router, emit: BufferedEmitter, *, flush_interval_s: float = 0.002
    ) -> None:
        self.router = router
        self._emit = emit
        self._lock = threading.Lock()
        # Sends happen in lock order, so the writer receives batches in the order made.
        self._send_lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._closed = False
        self.health: pykka.ActorRef[HealthActor] | None = None
        self._flusher = _Flusher(self, flush_interval_s)

    @contextmanager
    def locked(self) -> Iterator[Router]:
        """Enter the desk: the router, for one change or question."""
        with self._lock:
            yield self.router

    # -- the request path (a caller's thread) -------------------------------------------------

    def decide(
        self,
        query: RouteQuery,
        *,
        attempt: int,
        tried: dict[str, int],
        banned: frozenset[str],
        first: bool,
        reserve: bool = True,
        any_model: bool = False,
        not_before: dict[str, float] | None = None,
        again: bool = False,
        rekey: str | None = None,
        context_over: int | None = None,
    ) -> Decision | Backoff | None:
        """Decide (and reserve a slot for) one attempt; ``first`` also records the arrival.

        Raises:
            RoutingError: The runtime is closed, or nothing can serve the request.
        """
        with self._lock:
            if self._closed:
                raise RuntimeClosed("the runtime is closed", request_id=query.request.request_id)
            router = self.router
            if first:
                router.received(query)
            try:
                return router.decide(
                    query,
                    attempt=attempt,
                    tried=tried,
                    banned=banned,
                    reserve=reserve,
                    any_model=any_model,
                    not_before=not_before,
                    again=again,
                    rekey=rekey,
                    context_over=context_over,
                )
            finally:
                self._flusher.request()

    def record(
        self, query: RouteQuery, outcome: Outcome | None, ended: RequestEnded | None
    ) -> None:
        """Record how an attempt (and, with ``ended``, the request) ended; never raises."""
        with self._lock:
            try:
                self.router.finished(outcome, ended, query)
            except Exception:
                log.exception("recording the outcome of %s failed", query.request.request_id)
            if outcome is not None:
                self._outcomes.append(outcome)
            full = len(self._outcomes) >= BATCH_MAX
        if full:
            self.send()
        else:
            self._flusher.request()

    # -- batches ------------------------------------------------------------------------------

    def changed(self) -> None:
        """Note that the router emitted outside :meth:`decide`/:meth:`record`: send soon."""
        self._flusher.request()

    def send(self) -> None:
        """Send the gathered events to the log writer and outcomes to the health actor now."""
        with self._send_lock:
            with self._lock:
                events = self._emit.take()
                outcomes, self._outcomes = self._outcomes, []
                health = self.health
            if events:
                self._emit.deliver(events)
            if outcomes and health is not None:
                try:
                    health.tell(RecordOutcomes(outcomes))
                except pykka.ActorDeadError:
                    log.error("health actor is gone; %d outcomes not observed", len(outcomes))

    def close(self) -> None:
        """Refuse new decisions, send what gathered and stop the flusher."""
        with self._lock:
            self._closed = True
        self._flusher.stop()
        self.send()


class _Flusher:
    """Sends what the desk gathered, ``interval_s`` after it was asked to.

    One daemon thread per desk; idle (no wake-ups at all) while nothing is pending.
    """

    def __init__(self, desk: RoutingDesk, interval_s: float) -> None:
        self._desk = desk
        self._interval_s = interval_s
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routeledger-flusher", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a send within the interval (cheap when one is already due)."""
        if not self._wanted.is_set():
            self._wanted.set()

    def stop(self) -> None:
        """Stop the thread."""
        self._stopped.set()
        self._wanted.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopped.is_set():
                return
            time.sleep(self._interval_s)  # batching I/O: real time, not the injected clock
            self._wanted.clear()
            try:
                self._desk.send()
            except Exception:
                log.exception("sending the gathered events failed")
            # A stop() during the sleep set the event that clear() just reset: without this
            # check the thread would wait forever and stop() would wait out its join timeout.
            if self._stopped.is_set():
                return
