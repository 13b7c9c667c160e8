"""Health: passive evidence from outcomes, active probes on a timer, one circuit per provider.

:class:`HealthMonitor` is the logic (used directly by the simulation); :class:`HealthActor`
runs it on its own thread, fed by the provider actors' outcomes, and wakes on the injected
clock to move circuits whose cooldown ended to half-open and to probe every provider each
``interval_s`` (never two probe rounds at once). Every transition goes to the supervisor,
which applies it to routing and records it, so the log shows each transition exactly once
and in order with the routing decisions around it.

Runtimes sharing one log (:mod:`routeledger.actors._lease`) share their circuits: each
breaker also counts the outcomes other runtimes recorded (``ObserveLog``), but only the
leader's breakers move, record transitions and probe. A follower's breaker counts the same
evidence and goes back to the last recorded state after each outcome
(:meth:`CircuitBreaker.restore`); the leader's recorded transitions reach it through the log
and it adopts them (:meth:`HealthMonitor.adopt`), applying them to routing unrecorded. A
runtime alone on its log is its own leader: it behaves exactly as before.
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
    resumed_circuit,
)
from routeledger.actors._protocol import (
    ApplyHealth,
    GetHealth,
    HealthMessage,
    ObserveLog,
    ProbeRequested,
    ProbeResult,
    RecordOutcomes,
    Tick,
)
from routeledger.events import (
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    Event,
    ProviderHealth,
)

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.actors._messages import Outcome
    from routeledger.actors._provider import ProviderActor
    from routeledger.actors._supervisor import SupervisorActor
    from routeledger.events import HealthConfig

__all__ = ["HealthActor", "HealthMonitor"]

log = logging.getLogger("routeledger")

FOLLOWER_RECHECK_S = 0.5
"""How often a follower's timer checks whether it became the leader."""


def _always() -> bool:
    return True


class HealthMonitor:
    """The circuits of every provider, driven by outcomes, probes and time."""

    def __init__(self, config: HealthConfig, providers: Iterable[str]) -> None:
        self.config = config
        self.breakers = {name: CircuitBreaker(config) for name in providers}
        self.recorded = {name: b.state_of() for name, b in self.breakers.items()}
        """Each circuit's last recorded state: where a follower's breaker stays."""
        self.half_open_at: dict[str, float] = {}
        """Wall-clock time each circuit last went half-open (another runtime's attempts
        started after it are that runtime's half-open probes)."""

    def resume(self, circuits: Mapping[str, Resumed], now: float) -> None:
        """Continue the circuits the log left open (nothing is recorded: it already was)."""
        for name, resumed in circuits.items():
            breaker = self.breakers.get(name)
            if breaker is not None:
                breaker.resume(resumed, now)
                self.recorded[name] = breaker.state_of()

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

    def observe_recorded(self, event: Event, now: float) -> list[Transition]:
        """Fold in an attempt's end that another runtime recorded (a shared log)."""
        if not self.config.enabled:
            return []
        if isinstance(event, AttemptSucceeded):
            ok, error = True, None
        elif isinstance(event, AttemptFailed) and event.counts_against_health:
            ok, error = False, event.error
        else:
            return []
        breaker = self.breakers.get(event.provider)
        if breaker is None:
            return []
        # Routing lets only probes through a half-open circuit: an attempt another runtime
        # started after the circuit went half-open is one (one started before is not).
        started = event.ts - event.latency_ms / 1000
        probe = breaker.state == HALF_OPEN and started >= self.half_open_at.get(
            event.provider, float("inf")
        )
        t = breaker.record(ok=ok, latency_ms=event.latency_ms, now=now, probe=probe, error=error)
        return [t] if t is not None else []

    def adopt(
        self, event: CircuitStateChanged, *, wall_now: float, mono_now: float
    ) -> Transition | None:
        """Take a circuit transition another runtime recorded; return it for routing.

        Its deadline is reckoned from the event's wall-clock time, as at a restart.
        """
        breaker = self.breakers.get(event.provider)
        if breaker is None:
            return None
        resumed = resumed_circuit(event, config=self.config, wall_now=wall_now, mono_now=mono_now)
        breaker.adopt(event.to_state, resumed, mono_now)
        if event.to_state == HALF_OPEN:
            self.half_open_at[event.provider] = event.ts
        self.recorded[event.provider] = breaker.state_of()
        return Transition(
            event.from_state,
            event.to_state,
            event.reason,
            {},
            resumed.open_until if resumed is not None else None,
            event.trips,
        )

    def recorded_now(self, provider: str, transition: Transition, wall_now: float) -> None:
        """Note that the breaker's current state was recorded (by this runtime, the leader)."""
        breaker = self.breakers.get(provider)
        if breaker is not None:
            self.recorded[provider] = breaker.state_of()
        if transition.to_state == HALF_OPEN or (
            transition.prior is not None and transition.prior.to_state == HALF_OPEN
        ):
            self.half_open_at[provider] = wall_now

    def keep(self, provider: str) -> None:
        """Put a follower's breaker back to the last recorded state (its evidence stays)."""
        breaker = self.breakers.get(provider)
        if breaker is not None:
            breaker.restore(self.recorded[provider])

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
        leader: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self.monitor = HealthMonitor(config, providers)
        self._leader = leader or _always
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
        if not self._leader():
            # A follower moves no circuit and probes nothing; it looks again soon, in case
            # it became the leader.
            return self._clock.monotonic() + FOLLOWER_RECHECK_S
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
                        self._decided(outcome.provider, self.monitor.observe(outcome, now))
                case ProbeResult():
                    self._probes_outstanding = max(0, self._probes_outstanding - 1)
                    now = self._clock.monotonic()
                    self._decided(message.provider, self.monitor.probed(message, now))
                case ObserveLog(events):
                    self._observe_log(events)
                case Tick():
                    self._tick()
                case GetHealth():
                    return self.monitor.snapshot()
        except pykka.ActorDeadError:
            pass
        except Exception:
            log.exception("health actor: handling %s failed", type(message).__name__)
        return None

    def _decided(self, provider: str, transitions: list[Transition]) -> None:
        """Record what the breaker decided (leader), or keep it where the log says (follower)."""
        if not transitions:
            return
        if self._leader():
            for t in transitions:
                self._apply(provider, t)
        else:
            self.monitor.keep(provider)

    def _observe_log(self, events: list[Event]) -> None:
        mono = self._clock.monotonic()
        for event in events:
            if isinstance(event, CircuitStateChanged):
                t = self.monitor.adopt(event, wall_now=self._clock.time(), mono_now=mono)
                if t is not None:
                    self._supervisor.tell(ApplyHealth(event.provider, t, record=False))
                    self._wake.set()
            elif isinstance(event, AttemptSucceeded | AttemptFailed):
                self._decided(event.provider, self.monitor.observe_recorded(event, mono))

    def _apply(self, provider: str, transition: Transition) -> None:
        self.monitor.recorded_now(provider, transition, self._clock.time())
        self._supervisor.tell(ApplyHealth(provider, transition))
        # A newly opened circuit has a deadline the timer must wake for.
        self._wake.set()

    def _tick(self) -> None:
        if not self._leader():
            return
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
