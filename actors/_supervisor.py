"""The supervisor actor: routes, records, and keeps the provider actors alive.

It runs a :class:`~routeledger.actors._router.Router` on its own thread: a request's caller
asks it once per attempt for a decision (which also reserves the slot) and tells it how the
attempt ended. The health actor tells it circuit transitions to apply. Every event it makes
goes to the log writer and to the callback bus, in the order it made them.

Supervision follows OTP: a provider actor that dies (a raising message handler, or an
``on_start`` that fails) is restarted, at most ``max_restarts`` times within
``restart_window_s``; past that the provider is disabled and the event says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from routeledger.actors._health import ApplyHealth
from routeledger.actors._provider import ProviderCrashed, RecordOutcomes

if TYPE_CHECKING:
    from routeledger.actors._bus import EventBus
    from routeledger.actors._clock import Clock
    from routeledger.actors._messages import Backoff, Decision, Outcome
    from routeledger.actors._provider import ProviderHandle
    from routeledger.actors._router import Final, RouteQuery, Router
    from routeledger.events import Event

__all__ = [
    "BufferedEmitter",
    "Command",
    "DecideAttempt",
    "Notify",
    "ReportAttempt",
    "SupervisorActor",
    "UseHealth",
]

log = logging.getLogger("routeledger")

BATCH_MAX = 256
"""Outcomes gathered at most before they go to the health actor regardless of load."""


class DecideAttempt(NamedTuple):
    """Ask: choose and reserve a provider for an attempt (``first``: record the arrival)."""

    query: RouteQuery
    attempt: int
    tried: dict[str, int]
    banned: frozenset[str]
    first: bool
    reserve: bool = True
    any_model: bool = False
    not_before: dict[str, float] | None = None


class ReportAttempt(NamedTuple):
    """Tell: an attempt ended (``outcome``), and maybe the whole request (``final``)."""

    query: RouteQuery
    outcome: Outcome | None
    final: Final | None


class UseHealth(NamedTuple):
    """Tell: forward attempt outcomes to this health actor."""

    health: pykka.ActorRef[Any]


class Command(NamedTuple):
    """Ask: run ``fn(router)`` on the supervisor's thread and return its result."""

    fn: Callable[[Router], Any]


class Notify(NamedTuple):
    """Tell: run ``fn(router)`` on the supervisor's thread; a failure is only logged."""

    fn: Callable[[Router], Any]


class SupervisorActor(pykka.ThreadingActor):
    """Routes attempts and supervises the provider actors."""

    # A runtime that is never closed must not keep the process alive; the runtime's
    # exit hook closes it (and flushes the log) before daemon threads are stopped.
    use_daemon_thread = True

    def __init__(
        self,
        *,
        router: Router,
        handles: dict[str, ProviderHandle],
        restart: Callable[[str], None],
        clock: Clock,
        emit: BufferedEmitter | None = None,
        flush_interval_s: float = 0.002,
        max_restarts: int = 3,
        restart_window_s: float = 60.0,
    ) -> None:
        super().__init__()
        self.router = router
        self.handles = handles
        self.clock = clock
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self._restart = restart
        self._restarts: dict[str, deque[float]] = {}
        self._emit = emit
        self._outcomes: list[Outcome] = []
        self.health: pykka.ActorRef[Any] | None = None
        self._flusher = _Flusher(self.actor_ref, flush_interval_s)

    def on_receive(self, message: Any) -> Any:
        """Handle one message; pass on what it produced in batches.

        Events for the log writer and outcomes for the health actor gather for at most
        ``flush_interval_s`` (or ``BATCH_MAX`` outcomes) and then go out in one tell each:
        every tell wakes a thread, and waking two threads per request costs more CPU than
        routing it. A command (``flush()`` among them) sends at once.
        """
        try:
            return self._handle(message)
        finally:
            if type(message) is Command or len(self._outcomes) >= BATCH_MAX:
                self._send()
            elif (self._emit is not None and self._emit.pending) or self._outcomes:
                self._flusher.request()

    def on_stop(self) -> None:
        """Send the pending events and stop the flusher thread.

        Pending outcomes are dropped: the health actor stops first, and the health of a
        runtime that is closing no longer matters.
        """
        self._flusher.stop()
        if self._emit is not None:
            self._emit.send()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Stop the flusher thread if the actor dies."""
        self._flusher.stop()

    def _send(self) -> None:
        if self._emit is not None:
            self._emit.send()
        if self._outcomes:
            outcomes, self._outcomes = self._outcomes, []
            if self.health is not None:
                try:
                    self.health.tell(RecordOutcomes(outcomes))
                except pykka.ActorDeadError:
                    log.error("health actor is gone; %d outcomes not observed", len(outcomes))

    def _handle(self, message: Any) -> Any:
        """Handle one message; tells never raise."""
        router = self.router
        kind = type(message)
        if kind is DecideAttempt:
            if message.first:
                router.received(message.query)
            decision: Decision | Backoff | None = router.decide(
                message.query,
                attempt=message.attempt,
                tried=message.tried,
                banned=message.banned,
                reserve=message.reserve,
                any_model=message.any_model,
                not_before=message.not_before,
            )
            return decision
        if kind is Command:
            return message.fn(router)
        try:
            if kind is ReportAttempt:
                router.finished(message.outcome, message.final, message.query)
                if message.outcome is not None:
                    self._outcomes.append(message.outcome)
            elif kind is UseHealth:
                self.health = message.health
            elif kind is _SendPending:
                self._send()
            elif kind is Notify:
                message.fn(router)
            elif kind is ApplyHealth:
                router.apply_health(message.provider, message.transition)
            elif kind is ProviderCrashed:
                self._crashed(message.provider, message.reason)
            else:
                log.error("supervisor got an unknown message %s", kind.__name__)
        except Exception:
            log.exception("supervisor: handling %s failed", kind.__name__)
        return None

    def _crashed(self, provider: str, reason: str) -> None:
        router = self.router
        handle = self.handles.get(provider)
        if handle is None or router.providers[provider].disabled_reason is not None:
            return
        handle.wire = None  # not routable until a new actor has started
        now = self.clock.monotonic()
        times = self._restarts.setdefault(provider, deque())
        while times and times[0] < now - self.restart_window_s:
            times.popleft()
        if len(times) >= self.max_restarts:
            router.disable(
                provider,
                f"crashed {len(times) + 1} times within {self.restart_window_s:g} s "
                f"(restart limit {self.max_restarts}); last: {reason}",
            )
            return
        times.append(now)
        router.restarted(provider, reason, len(times))
        try:
            self._restart(provider)
        except Exception as exc:
            router.disable(provider, f"restart failed: {type(exc).__name__}: {exc}")


class _SendPending(NamedTuple):
    """Tell (from the flusher): send the events and outcomes gathered so far."""


class _Flusher:
    """Tells the supervisor to send what it gathered, ``interval_s`` after it asked.

    One daemon thread per supervisor; idle (no wake-ups at all) while nothing is pending.
    """

    def __init__(self, ref: pykka.ActorRef[Any], interval_s: float) -> None:
        self._ref = ref
        self._interval_s = interval_s
        self._wanted = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="routeledger-flusher", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a send within the interval (cheap when one is already due)."""
        if not self._wanted.is_set():
            self._wanted.set()

    def stop(self) -> None:
        """Stop the thread."""
        self._stopped = True
        self._wanted.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopped:
                return
            time.sleep(self._interval_s)  # batching I/O: real time, not the injected clock
            self._wanted.clear()
            try:
                self._ref.tell(_SendPending())
            except pykka.ActorDeadError:
                return


class BufferedEmitter:
    """What the router emits through: events gather during one supervisor message, then go
    to the log writer in one tell (and to the callbacks), in the order they were made."""

    def __init__(self, writer: pykka.ActorRef[Any], bus: EventBus) -> None:
        from routeledger.actors._writer import Append

        self._append = Append
        self._tell = writer.tell
        self._publish = bus.publish
        self._pending: list[Event] = []

    def __call__(self, events: list[Event]) -> None:
        self._pending.extend(events)

    @property
    def pending(self) -> bool:
        """Return whether events wait to be sent."""
        return bool(self._pending)

    def send(self) -> None:
        """Send what gathered since the last call."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        try:
            self._tell(self._append(events))
        except pykka.ActorDeadError:
            log.error("log writer is gone; %d events not recorded", len(events))
        self._publish(events)
