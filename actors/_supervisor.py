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
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from routeledger.actors._health import ApplyHealth
from routeledger.actors._provider import ProviderCrashed, RecordOutcome

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
        self.health: pykka.ActorRef[Any] | None = None

    def on_receive(self, message: Any) -> Any:
        """Handle one message; then send what it emitted to the log writer in one tell."""
        try:
            return self._handle(message)
        finally:
            if self._emit is not None:
                self._emit.send()

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
                if message.outcome is not None and self.health is not None:
                    self.health.tell(RecordOutcome(message.outcome))
            elif kind is UseHealth:
                self.health = message.health
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
