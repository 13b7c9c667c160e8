"""The supervisor actor: owns the routing desk, and keeps the provider actors alive.

The request path enters the :class:`~routeledger.actors._desk.RoutingDesk` directly, under its
lock, from the caller's thread (an ask would cost more than the decision). The supervisor's
own messages (``SupervisorMessage`` in :mod:`~routeledger.actors._protocol`) enter the same
lock: operator changes and questions, circuit transitions from the health actor, records
made off the request path, and the crashes of provider actors.

Supervision follows OTP: a provider actor that dies (a raising message handler, or an
``on_start`` that fails) is restarted, at most ``max_restarts`` times within
``restart_window_s``; past that the provider is disabled and the event says why.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from routeledger.actors._messages import RequestEnded
from routeledger.actors._protocol import (
    ApplyHealth,
    AssignABVariant,
    ChargePeerAttempts,
    ClearRoutes,
    CreatePool,
    DescribeProvider,
    DisabledProviders,
    EstimateCosts,
    FindCapable,
    GetBudgets,
    HonourRetryAfter,
    ObserveSpend,
    ProviderCrashed,
    RecordABMetrics,
    RecordCacheHit,
    RecordEvents,
    RecordRejected,
    SetLimit,
    SetPriority,
    SetupABTest,
    SupervisorMessage,
    Sync,
    UseHealth,
)

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.actors._desk import RoutingDesk
    from routeledger.actors._provider import ProviderHandle
    from routeledger.actors._router import Router

__all__ = ["SupervisorActor"]

log = logging.getLogger("routeledger")


class SupervisorActor(pykka.ThreadingActor):
    """Serves operator changes and questions on the routing desk; supervises providers."""

    # A runtime that is never closed must not keep the process alive; the runtime's
    # exit hook closes it (and flushes the log) before daemon threads are stopped.
    use_daemon_thread = True

    def __init__(
        self,
        *,
        desk: RoutingDesk,
        handles: dict[str, ProviderHandle],
        restart: Callable[[str], None],
        clock: Clock,
        max_restarts: int = 3,
        restart_window_s: float = 60.0,
    ) -> None:
        super().__init__()
        self.desk = desk
        self.handles = handles
        self.clock = clock
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self._restart = restart
        self._restarts: dict[str, deque[float]] = {}

    def on_receive(self, message: SupervisorMessage) -> Any:
        """Handle one message; what it made is sent at once for an ask, soon for a tell.

        An ask (an operator's change or question, ``flush()`` among them) sends the events
        gathered so far before it answers, so that the log writer has them when the caller
        asks it next.
        """
        desk = self.desk
        try:
            with desk.locked() as router:
                answer = self._handle(router, message)
        except BaseException:
            desk.send()
            raise
        if answer is not _TOLD:
            desk.send()
            return answer
        desk.changed()
        return None

    def on_stop(self) -> None:
        """Send what the desk gathered and stop its flusher."""
        self.desk.close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Stop the desk's flusher if the actor dies."""
        self.desk.close()

    def _handle(self, router: Router, message: SupervisorMessage) -> Any:
        """Handle one message under the desk's lock; tells never raise."""
        match message:
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
            case GetBudgets():
                return router.budget_status()
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
        self._told(router, message)
        return _TOLD

    def _told(self, router: Router, message: SupervisorMessage) -> None:
        """Handle a tell; a failure is logged, never raised (it would kill the actor)."""
        try:
            match message:
                case RecordRejected(request_id, error):
                    router.rejected(request_id, error)
                case RecordCacheHit(query, response):
                    router.received(query)
                    router.finished(None, RequestEnded(response, None, 0, 0.0), query)
                case RecordEvents(events):
                    router.emit(list(events))
                case ApplyHealth(provider, transition, record):
                    router.apply_health(provider, transition, record=record)
                case HonourRetryAfter(event):
                    router.honour_rate_limit(event)
                case ObserveSpend(events):
                    router.spend.observe(events)
                case ChargePeerAttempts(events):
                    router.charge_peer_attempts(events)
                case ProviderCrashed(provider, reason):
                    self._crashed(router, provider, reason)
                case UseHealth(health):
                    self.desk.health = health
                case _:
                    log.error("supervisor got an unknown message %s", type(message).__name__)
        except Exception:
            log.exception("supervisor: handling %s failed", type(message).__name__)

    def _crashed(self, router: Router, provider: str, reason: str) -> None:
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


_TOLD = object()
"""What :meth:`SupervisorActor._handle` returns for a tell (an ask may answer ``None``)."""
