"""Health: passive evidence from outcomes, active probes on a timer, one circuit per provider.

:class:`HealthMonitor` is the logic (used directly by the simulation); :class:`HealthActor`
runs it on its own thread, fed by the provider actors' outcomes, and wakes on the injected
clock to move circuits whose cooldown ended to half-open and to probe every provider each
``interval_s`` (never two probe rounds at once). Every transition goes to the supervisor,
which applies it to routing and records it, so the log shows each transition exactly once
and in order with the routing decisions around it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pykka

from routeledger.actors._circuit import (
    CLOSED,
    HALF_OPEN,
    CircuitBreaker,
    Resumed,
    Transition,
    counts_against_health,
)
from routeledger.actors._protocol import (
    ApplyHealth,
    GetHealth,
    HealthMessage,
    ProbeRequested,
    ProbeResult,
    RecordOutcomes,
    Tick,
)
from routeledger.events import ProviderHealth

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.actors._messages import Outcome
    from routeledger.actors._provider import ProviderActor
    from routeledger.actors._supervisor import SupervisorActor
    from routeledger.events import HealthConfig

__all__ = ["HealthActor", "HealthMonitor"]

log = logging.getLogger("routeledger")


class HealthMonitor:
    """The circuits of every provider, driven by outcomes, probes and time."""

    def __init__(self, config: HealthConfig, providers: Iterable[str]) -> None:
        self.config = config
        self.breakers = {name: CircuitBreaker(config) for name in providers}

    def resume(self, circuits: Mapping[str, Resumed], now: float) -> None:
        """Continue the circuits the log left open (nothing is recorded: it already was)."""
        for name, resumed in circuits.items():
            breaker = self.breakers.get(name)
            if breaker is not None:
                breaker.resume(resumed, now)

    def observe(self, outcome: Outcome, now: float) -> list[Transition]:
        """Fold an attempt's outcome in; 400-class request errors do not count."""
        breaker = self.breakers.get(outcome.provider)
        if breaker is None or not self.config.enabled:
            return []
        if outcome.error is not None and not counts_against_health(outcome.error):
            return []
        # A probe's outcome can arrive before the timer moved its circuit to half-open:
        # move it first, so that the log shows every transition.
        due = breaker.poll(now) if outcome.probe else None
        t = breaker.record(
            ok=outcome.error is None,
            latency_ms=outcome.latency_ms,
            now=now,
            probe=outcome.probe,
            error=type(outcome.error).__name__ if outcome.error is not None else None,
        )
        return [x for x in (due, t) if x is not None]

    def probed(self, result: ProbeResult, now: float) -> list[Transition]:
        """Fold an active probe's result in.

        A failed probe counts as a failure of a closed circuit. A successful probe closes a
        circuit whose cooldown is over (it is the half-open trial); it does not cut a cooldown
        short, and it is not counted as traffic in a closed circuit's window.
        """
        breaker = self.breakers.get(result.provider)
        if breaker is None or not self.config.enabled:
            return []
        if breaker.state == CLOSED:
            if result.ok:
                return []
            t = breaker.record(ok=False, latency_ms=result.latency_ms, now=now, error=result.error)
            return [t] if t is not None else []
        due = breaker.poll(now)
        if breaker.state != HALF_OPEN:
            return []
        t = breaker.record(
            ok=result.ok, latency_ms=result.latency_ms, now=now, probe=True, error=result.error
        )
        return [x for x in (due, t) if x is not None]

    def poll(self, now: float) -> list[tuple[str, Transition]]:
        """Move every circuit whose cooldown ended to half-open."""
        out = []
        for name, breaker in self.breakers.items():
            t = breaker.poll(now)
            if t is not None:
                out.append((name, t))
        return out

    def next_deadline(self) -> float | None:
        """Return the earliest time :meth:`poll` has something to do."""
        deadlines = [d for b in self.breakers.values() if (d := b.next_deadline()) is not None]
        return min(deadlines, default=None)

    def snapshot(self) -> dict[str, ProviderHealth]:
        """Return every provider's health."""
        return {
            name: ProviderHealth(
                provider=name,
                healthy=b.state == CLOSED,
                state=b.state,
                consecutive_failures=b.consecutive_failures,
                error_rate=round(b.error_rate, 6),
                calls_in_window=b.calls,
                trips=b.trips,
                open_until=b.open_until,
                last_error=b.last_error,
            )
            for name, b in self.breakers.items()
        }


class HealthActor(pykka.ThreadingActor):
    """Runs a :class:`HealthMonitor` and its timer."""

    # A runtime that is never closed must not keep the process alive; the runtime's
    # exit hook closes it (and flushes the log) before daemon threads are stopped.
    use_daemon_thread = True

    def __init__(
        self,
        config: HealthConfig,
        providers: Iterable[str],
        *,
        clock: Clock,
        supervisor: pykka.ActorRef[SupervisorActor],
        provider_refs: Callable[[], dict[str, pykka.ActorRef[ProviderActor]]],
        active: bool = True,
        resumed: Mapping[str, Resumed] | None = None,
    ) -> None:
        super().__init__()
        self.monitor = HealthMonitor(config, providers)
        self.monitor.resume(resumed or {}, clock.monotonic())
        self._clock = clock
        self._supervisor = supervisor
        self._provider_refs = provider_refs
        self._active = active and config.enabled
        self._next_probe = clock.monotonic() + config.interval_s
        self._probes_outstanding = 0
        self._cancel = threading.Event()
        self._wake = threading.Event()
        self._timer: threading.Thread | None = None

    def on_start(self) -> None:
        """Start the timer thread."""
        self._timer = threading.Thread(
            target=self._run_timer, name="routeledger-health-timer", daemon=True
        )
        self._timer.start()

    def on_stop(self) -> None:
        """Stop the timer thread."""
        self._stop_timer()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Stop the timer if the actor dies."""
        self._stop_timer()

    def _stop_timer(self) -> None:
        self._cancel.set()
        self._wake.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=5)

    def _deadline(self) -> float:
        d = self._next_probe if self._active else float("inf")
        circuit = self.monitor.next_deadline()
        return min(d, circuit) if circuit is not None else d

    def _run_timer(self) -> None:
        # Wake at the next deadline, tell the actor, and let it say when the next one is.
        while not self._cancel.is_set():
            deadline = self._deadline()
            if deadline == float("inf"):
                deadline = self._clock.monotonic() + 3600.0
            woken = self._clock.sleep_until(deadline, self._wake)
            if self._cancel.is_set():
                return
            if woken:  # a new, maybe earlier, deadline: compute it again
                self._wake.clear()
                continue
            try:
                self.actor_ref.ask(Tick(), timeout=30)
            except (pykka.ActorDeadError, pykka.Timeout):
                return

    def on_receive(self, message: HealthMessage) -> Any:
        """Handle one message; tells never raise."""
        try:
            match message:
                case RecordOutcomes(outcomes):
                    now = self._clock.monotonic()
                    for outcome in outcomes:
                        for t in self.monitor.observe(outcome, now):
                            self._apply(outcome.provider, t)
                case ProbeResult():
                    self._probes_outstanding = max(0, self._probes_outstanding - 1)
                    for t in self.monitor.probed(message, self._clock.monotonic()):
                        self._apply(message.provider, t)
                case Tick():
                    self._tick()
                case GetHealth():
                    return self.monitor.snapshot()
        except pykka.ActorDeadError:
            pass
        except Exception:
            log.exception("health actor: handling %s failed", type(message).__name__)
        return None

    def _apply(self, provider: str, transition: Transition) -> None:
        self._supervisor.tell(ApplyHealth(provider, transition))
        # A newly opened circuit has a deadline the timer must wake for.
        self._wake.set()

    def _tick(self) -> None:
        now = self._clock.monotonic()
        for provider, t in self.monitor.poll(now):
            self._apply(provider, t)
        if self._active and now >= self._next_probe:
            self._next_probe = now + self.monitor.config.interval_s
            if self._probes_outstanding:
                return  # the last round is still running: never overlap rounds
            for ref in self._provider_refs().values():
                try:
                    ref.tell(ProbeRequested(self.monitor.config.probe_timeout_s, self.actor_ref))
                    self._probes_outstanding += 1
                except pykka.ActorDeadError:
                    pass

    def snapshot(self) -> dict[str, ProviderHealth]:
        """Return every provider's health (call through the actor: ask ``GetHealth``)."""
        return self.monitor.snapshot()
