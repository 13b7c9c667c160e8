"""The supervisor actor: routes, records, and keeps the provider actors alive.

It runs a :class:`~routeledger.actors._router.Router` on its own thread: a request's caller
asks it once per attempt for a decision (which also reserves the slot) and tells it how the
attempt ended. The health actor tells it circuit transitions to apply. Every event it makes
goes to the log writer and to the callback bus, in the order it made them. Its messages are
``SupervisorMessage`` in :mod:`~routeledger.actors._protocol`.

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
from typing import TYPE_CHECKING, Any

import pykka

from routeledger.actors._messages import RequestEnded
from routeledger.actors._protocol import (
    Append,
    ApplyHealth,
    AssignABVariant,
    ClearRoutes,
    CreatePool,
    DecideAttempt,
    DescribeProvider,
    DisabledProviders,
    EstimateCosts,
    FindCapable,
    ProviderCrashed,
    RecordABMetrics,
    RecordCacheHit,
    RecordEvents,
    RecordOutcomes,
    RecordRejected,
    ReportAttempt,
    SendPending,
    SetLimit,
    SetPriority,
    SetupABTest,
    SupervisorMessage,
    Sync,
    UseHealth,
)

if TYPE_CHECKING:
    from routeledger.actors._bus import EventBus
    from routeledger.actors._clock import Clock
    from routeledger.actors._health import HealthActor
    from routeledger.actors._messages import Outcome
    from routeledger.actors._provider import ProviderHandle
    from routeledger.actors._router import Router
    from routeledger.actors._writer import LogWriterActor
    from routeledger.events import Event

__all__ = ["BufferedEmitter", "SupervisorActor"]

log = logging.getLogger("routeledger")

BATCH_MAX = 256
"""Outcomes gathered at most before they go to the health actor regardless of load."""

_QUESTIONS = (
    SetPriority,
    SetLimit,
    CreatePool,
    SetupABTest,
    AssignABVariant,
    RecordABMetrics,
    FindCapable,
    EstimateCosts,
    DescribeProvider,
    DisabledProviders,
    ClearRoutes,
    Sync,
)
"""The asks of callers other than requests: what they made is sent at once, not batched."""


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
        self.health: pykka.ActorRef[HealthActor] | None = None
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
            if isinstance(message, _QUESTIONS) or len(self._outcomes) >= BATCH_MAX:
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

    def _handle(self, message: SupervisorMessage) -> Any:
        """Handle one message; tells never raise."""
        router = self.router
        match message:
            case DecideAttempt():
                if message.first:
                    router.received(message.query)
                return router.decide(
                    message.query,
                    attempt=message.attempt,
                    tried=message.tried,
                    banned=message.banned,
                    reserve=message.reserve,
                    any_model=message.any_model,
                    not_before=message.not_before,
                )
            case SetPriority(provider, priority):
                return router.set_priority(provider, priority)
            case SetLimit(provider, limit):
                return router.set_limit(provider, limit)
            case CreatePool(pool, replace):
                return router.create_pool(pool, replace=replace)
            case SetupABTest(test, replace):
                return router.setup_ab_test(test, replace=replace)
            case AssignABVariant(name, key):
                return router.ab.assign(name, key=key)
            case RecordABMetrics(name, variant, latency_ms, cost, error):
                return router.ab.record(
                    name, variant, latency_ms=latency_ms, cost=cost, error=error
                )
            case FindCapable(model):
                return router.find_capable(model)
            case EstimateCosts(request):
                return router.estimate_costs(request)
            case DescribeProvider(provider):
                return router.provider(provider).priority
            case DisabledProviders():
                return {
                    n: p.disabled_reason for n, p in router.providers.items() if p.disabled_reason
                }
            case ClearRoutes():
                return router.clear_cache()
            case Sync():
                return None
        self._told(message)
        return None

    def _told(self, message: SupervisorMessage) -> None:
        """Handle a tell; a failure is logged, never raised (it would kill the actor)."""
        router = self.router
        try:
            match message:
                case ReportAttempt(query, outcome, ended):
                    router.finished(outcome, ended, query)
                    if outcome is not None:
                        self._outcomes.append(outcome)
                case RecordRejected(request_id, error):
                    router.rejected(request_id, error)
                case RecordCacheHit(query, response):
                    router.received(query)
                    router.finished(None, RequestEnded(response, None, 0, 0.0), query)
                case RecordEvents(events):
                    router.emit(list(events))
                case ApplyHealth(provider, transition):
                    router.apply_health(provider, transition)
                case ProviderCrashed(provider, reason):
                    self._crashed(provider, reason)
                case UseHealth(health):
                    self.health = health
                case SendPending():
                    self._send()
                case _:
                    log.error("supervisor got an unknown message %s", type(message).__name__)
        except Exception:
            log.exception("supervisor: handling %s failed", type(message).__name__)

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


class _Flusher:
    """Tells the supervisor to send what it gathered, ``interval_s`` after it asked.

    One daemon thread per supervisor; idle (no wake-ups at all) while nothing is pending.
    """

    def __init__(self, ref: pykka.ActorRef[SupervisorActor], interval_s: float) -> None:
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
                self._ref.tell(SendPending())
            except pykka.ActorDeadError:
                return


class BufferedEmitter:
    """What the router emits through: events gather during one supervisor message, then go
    to the log writer in one tell (and to the callbacks), in the order they were made."""

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

    def send(self) -> None:
        """Send what gathered since the last call."""
        if not self._pending:
            return
        events, self._pending = self._pending, []
        try:
            self._tell(Append(events))
        except pykka.ActorDeadError:
            log.error("log writer is gone; %d events not recorded", len(events))
        self._publish(events)
