"""A per-provider circuit breaker as a pure state machine (no threads, time passed in).

Legal transitions::

    closed ──trip──► open ──cooldown over──► half_open ──probe ok──► closed
                      ▲                          │
                      └────────probe failed──────┘

The circuit trips on ``failure_threshold`` consecutive failures, or when the error rate or
the slow-call rate over the last ``window_size`` calls reaches its threshold with at least
``min_calls`` calls. Each trip without a recovery in between doubles the cooldown, up to
``max_cooldown_s``; after ``failed_after_trips`` such trips the provider is reported failed.
Request errors (400-class) say nothing about the provider's health and are not counted;
authentication errors are.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from routeledger.events import (
    AttemptCancelled,
    BadRequest,
    ProviderError,
    ProviderSaturated,
    StreamCancelled,
)

if TYPE_CHECKING:
    from routeledger.events import CircuitStateChanged, HealthConfig

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "CircuitBreaker",
    "CircuitMirror",
    "Resumed",
    "Transition",
    "counts_against_health",
    "resumed_circuit",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

LEGAL = frozenset({(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)})
"""Every legal (from, to) pair."""


def counts_against_health(error: ProviderError | None) -> bool:
    """Return whether an attempt's error is evidence against the provider's health."""
    return error is not None and not isinstance(
        error, BadRequest | ProviderSaturated | StreamCancelled | AttemptCancelled
    )


class Transition(NamedTuple):
    """One change of circuit state, with the evidence that caused it."""

    from_state: str
    to_state: str
    reason: str
    evidence: dict[str, float]
    open_until: float | None
    trips: int
    failed: bool = False
    """This trip crossed ``failed_after_trips``: the provider is reported failed."""
    unhealthy_for_s: float = 0.0
    prior: Transition | None = None
    """The ``open -> half_open`` step this transition implies, when a probe's outcome arrived
    while the circuit was still open: record it first so the log shows every step once."""


class CircuitBreaker:
    """The circuit of one provider."""

    __slots__ = (
        "_opened_at",
        "_window",
        "config",
        "consecutive_failures",
        "last_error",
        "open_until",
        "state",
        "trips",
    )

    def __init__(self, config: HealthConfig) -> None:
        self.config = config
        self.state = CLOSED
        self.consecutive_failures = 0
        self.trips = 0
        self.open_until: float | None = None
        self.last_error: str | None = None
        self._opened_at: float | None = None
        self._window: deque[tuple[bool, bool]] = deque(maxlen=config.window_size)

    # -- figures ----------------------------------------------------------------------------

    @property
    def error_rate(self) -> float:
        """Return the failure share of the calls in the window."""
        n = len(self._window)
        return sum(1 for ok, _ in self._window if not ok) / n if n else 0.0

    @property
    def slow_rate(self) -> float:
        """Return the slow-call share of the calls in the window."""
        n = len(self._window)
        return sum(1 for _, slow in self._window if slow) / n if n else 0.0

    @property
    def calls(self) -> int:
        """Return how many calls the window holds."""
        return len(self._window)

    def evidence(self) -> dict[str, float]:
        """Return the figures behind the current state."""
        return {
            "consecutive_failures": float(self.consecutive_failures),
            "error_rate": round(self.error_rate, 6),
            "slow_rate": round(self.slow_rate, 6),
            "calls": float(self.calls),
            "trips": float(self.trips),
        }

    # -- inputs -----------------------------------------------------------------------------

    def record(
        self,
        *,
        ok: bool,
        latency_ms: float,
        now: float,
        probe: bool = False,
        error: str | None = None,
    ) -> Transition | None:
        """Fold one counted outcome in; return the transition it caused, if any.

        ``probe`` marks the outcome of a call let through a half-open (or due) circuit.
        Outcomes of calls that started before the circuit opened are ignored while it is open.
        """
        if not ok:
            self.last_error = error
        if self.state == CLOSED:
            slow = self.config.slow_call_ms is not None and latency_ms >= self.config.slow_call_ms
            self._window.append((ok, slow))
            self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
            reason = self._trip_reason()
            return self._open(now, reason) if reason else None
        prior = None
        if self.state == OPEN and probe:
            # A probe's outcome can arrive before the health actor's own timer moved the
            # circuit to half-open; the probe itself is the evidence that the cooldown ended.
            # The skipped step travels with the result, so no transition goes unrecorded.
            prior = self._move_half_open()
        if self.state == HALF_OPEN and probe:
            if ok:
                return self._close(now)._replace(prior=prior)
            return self._open(now, "half-open probe failed", from_state=HALF_OPEN)._replace(
                prior=prior
            )
        return None

    def poll(self, now: float) -> Transition | None:
        """Move an open circuit whose cooldown is over to half-open."""
        if self.state == OPEN and self.open_until is not None and now >= self.open_until:
            return self._move_half_open()
        return None

    def next_deadline(self) -> float | None:
        """Return when :meth:`poll` will next have something to do."""
        return self.open_until if self.state == OPEN else None

    # -- transitions ------------------------------------------------------------------------

    def resume(self, resumed: Resumed, now: float) -> None:
        """Continue an open circuit recorded in the log (see :func:`resumed_circuit`)."""
        self.state = OPEN
        self.open_until = resumed.open_until
        self.trips = resumed.trips
        self._opened_at = now

    def state_of(self) -> tuple[str, float | None, int, float | None]:
        """Return the state a follower keeps to (see :meth:`restore`)."""
        return (self.state, self.open_until, self.trips, self._opened_at)

    def restore(self, state: tuple[str, float | None, int, float | None]) -> None:
        """Go back to a state taken by :meth:`state_of`, keeping the evidence counted since.

        A runtime that follows another's circuit decisions (a shared log's follower) counts
        every outcome, but its own breaker never moves: it takes the leader's transitions.
        """
        self.state, self.open_until, self.trips, self._opened_at = state

    def adopt(self, to_state: str, resumed: Resumed | None, now: float) -> None:
        """Take a transition another runtime recorded (``resumed``: its local deadline)."""
        if to_state == CLOSED or resumed is None:
            self.state = CLOSED
            self.open_until = None
            self._opened_at = None
            self.trips = 0
            self.consecutive_failures = 0
            self._window.clear()
            return
        opened = self._opened_at
        self.resume(resumed, now)
        self._opened_at = now if opened is None else opened
        if to_state == HALF_OPEN:
            self.state = HALF_OPEN

    def _trip_reason(self) -> str | None:
        c = self.config
        if self.consecutive_failures >= c.failure_threshold:
            return f"{self.consecutive_failures} consecutive failures"
        if len(self._window) >= c.min_calls:
            if self.error_rate >= c.error_rate_threshold:
                return f"error rate {self.error_rate:.0%} over the last {len(self._window)} calls"
            if c.slow_call_ms is not None and self.slow_rate >= c.slow_call_rate:
                return (
                    f"{self.slow_rate:.0%} of the last {len(self._window)} calls slower than "
                    f"{c.slow_call_ms:g} ms"
                )
        return None

    def _open(self, now: float, reason: str, *, from_state: str = CLOSED) -> Transition:
        self.trips += 1
        cooldown = min(self.config.cooldown_s * 2 ** (self.trips - 1), self.config.max_cooldown_s)
        evidence = self.evidence() | {"cooldown_s": cooldown}
        self.state = OPEN
        self.open_until = now + cooldown
        if self._opened_at is None:
            self._opened_at = now
        return Transition(
            from_state,
            OPEN,
            reason,
            evidence,
            self.open_until,
            self.trips,
            failed=self.trips == self.config.failed_after_trips,
        )

    def _move_half_open(self) -> Transition:
        self.state = HALF_OPEN
        return Transition(
            OPEN, HALF_OPEN, "cooldown over", self.evidence(), self.open_until, self.trips
        )

    def _close(self, now: float) -> Transition:
        unhealthy_for = now - self._opened_at if self._opened_at is not None else 0.0
        evidence = self.evidence()
        self.state = CLOSED
        self.open_until = None
        self._opened_at = None
        self.trips = 0
        self.consecutive_failures = 0
        self._window.clear()
        return Transition(
            HALF_OPEN,
            CLOSED,
            "half-open probe succeeded",
            evidence,
            None,
            0,
            unhealthy_for_s=unhealthy_for,
        )


class CircuitMirror:
    """Routing's copy of one provider's circuit, moved only by the breaker's transitions.

    The health actor owns the :class:`CircuitBreaker`; the router, on another thread, routes
    by this mirror. Besides the state it counts the half-open probes routing may still let
    through, so that only ``half_open_probes`` attempts reach a recovering provider.
    """

    __slots__ = ("open_until", "probes_left", "state")

    def __init__(self) -> None:
        self.state = CLOSED
        self.open_until: float | None = None
        self.probes_left = 0

    def apply(self, transition: Transition, *, half_open_probes: int) -> None:
        """Follow one transition of the breaker."""
        self.state = transition.to_state
        self.open_until = transition.open_until
        self.probes_left = half_open_probes if transition.to_state != CLOSED else 0

    def view(self, now: float) -> str:
        """Return the circuit as routing sees it: ``due`` when a probe may go through.

        An open circuit whose cooldown is over counts as half-open although the breaker's
        timer may not have moved it yet.
        """
        if self.state == OPEN and self.open_until is not None and now >= self.open_until:
            return "due" if self.probes_left > 0 else HALF_OPEN
        if self.state == HALF_OPEN:
            return "due" if self.probes_left > 0 else HALF_OPEN
        return self.state

    def resume(self, resumed: Resumed, *, half_open_probes: int) -> None:
        """Follow a breaker continued from the log (:meth:`CircuitBreaker.resume`)."""
        self.state = OPEN
        self.open_until = resumed.open_until
        self.probes_left = half_open_probes

    def take_probe(self) -> None:
        """Count one probe let through (the caller saw :meth:`view` say ``due``)."""
        self.probes_left -= 1


class Resumed(NamedTuple):
    """A circuit continued from the log: open until ``open_until`` (monotonic)."""

    open_until: float
    trips: int


def resumed_circuit(
    last: CircuitStateChanged | None, *, config: HealthConfig, wall_now: float, mono_now: float
) -> Resumed | None:
    """Return how a circuit recorded in the log continues now (``None``: closed).

    An open circuit stays open for the rest of its cooldown, reckoned from the transition's
    wall-clock time and capped at the cooldown (a clock that went back never lengthens it);
    a half-open one, whose cooldown was over, is due at once. Either way it must pass a
    probe before it takes traffic again.
    """
    if last is None or last.to_state == CLOSED:
        return None
    trips = max(1, last.trips)
    cooldown = min(config.cooldown_s * 2 ** (trips - 1), config.max_cooldown_s)
    remaining = 0.0
    if last.to_state == OPEN:
        remaining = min(cooldown, max(0.0, last.ts + cooldown - wall_now))
    return Resumed(mono_now + remaining, trips)
