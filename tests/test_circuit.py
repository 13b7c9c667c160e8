"""Tests of the circuit breaker state machine and of which errors count against health."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger.actors._circuit import (
    CLOSED,
    HALF_OPEN,
    LEGAL,
    OPEN,
    CircuitBreaker,
    Transition,
    counts_against_health,
)
from routeledger.events import (
    AuthenticationError,
    BadRequest,
    ContextLengthExceeded,
    HealthConfig,
    ProtocolError,
    ProviderSaturated,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    StreamCancelled,
    StreamInterrupted,
)


def breaker(**kw: Any) -> CircuitBreaker:
    """Return a breaker; by default only consecutive failures (3) trip it."""
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("window_size", 10)
    kw.setdefault("min_calls", 10)
    kw.setdefault("error_rate_threshold", 1.0)
    kw.setdefault("cooldown_s", 10.0)
    kw.setdefault("max_cooldown_s", 35.0)
    return CircuitBreaker(HealthConfig(**kw))


def fail(cb: CircuitBreaker, now: float, **kw: Any) -> Transition | None:
    return cb.record(ok=False, latency_ms=5.0, now=now, error="ProviderUnavailable", **kw)


def ok(cb: CircuitBreaker, now: float, latency_ms: float = 5.0, **kw: Any) -> Transition | None:
    return cb.record(ok=True, latency_ms=latency_ms, now=now, **kw)


def test_trips_on_consecutive_failures() -> None:
    """The circuit opens on exactly ``failure_threshold`` consecutive failures."""
    cb = breaker()
    assert fail(cb, 1.0) is None
    assert fail(cb, 2.0) is None
    t = fail(cb, 3.0)
    assert t is not None
    assert (t.from_state, t.to_state) == (CLOSED, OPEN)
    assert "3 consecutive failures" in t.reason
    assert t.open_until == 13.0
    assert t.trips == 1
    assert cb.state == OPEN
    assert cb.last_error == "ProviderUnavailable"


def test_success_resets_consecutive_failures() -> None:
    """A success in the closed state resets the consecutive failure count."""
    cb = breaker()
    fail(cb, 1.0)
    fail(cb, 2.0)
    ok(cb, 3.0)
    assert cb.consecutive_failures == 0
    assert fail(cb, 4.0) is None
    assert fail(cb, 5.0) is None
    assert cb.state == CLOSED


def test_trips_on_error_rate_with_min_calls() -> None:
    """The error rate trips the circuit only once the window holds ``min_calls`` calls."""
    cb = breaker(failure_threshold=100, window_size=10, min_calls=6, error_rate_threshold=0.5)
    outcomes = [False, True, False, True, False]  # 60 % errors, but only 5 calls
    for i, good in enumerate(outcomes):
        assert cb.record(ok=good, latency_ms=1.0, now=float(i)) is None
    t = ok(cb, 10.0)  # 6 calls, 3 failures: 50 %
    assert t is not None
    assert t.to_state == OPEN
    assert "error rate 50%" in t.reason
    assert t.evidence["calls"] == 6.0


def test_error_rate_window_forgets_old_calls() -> None:
    """Only the last ``window_size`` calls count toward the error rate."""
    cb = breaker(failure_threshold=100, window_size=4, min_calls=4, error_rate_threshold=0.75)
    fail(cb, 0.0)
    fail(cb, 1.0)
    ok(cb, 2.0)
    ok(cb, 3.0)  # 50 %
    assert cb.state == CLOSED
    for i in range(4, 8):
        ok(cb, float(i))
    assert cb.error_rate == 0.0
    assert cb.calls == 4


def test_trips_on_slow_call_rate() -> None:
    """Calls at or above ``slow_call_ms`` trip the circuit once their share reaches the rate."""
    cb = breaker(
        failure_threshold=100, window_size=4, min_calls=4, slow_call_ms=500.0, slow_call_rate=0.75
    )
    assert ok(cb, 0.0, latency_ms=500.0) is None
    assert ok(cb, 1.0, latency_ms=10.0) is None
    assert ok(cb, 2.0, latency_ms=900.0) is None
    t = ok(cb, 3.0, latency_ms=600.0)
    assert t is not None
    assert t.to_state == OPEN
    assert "slower than 500 ms" in t.reason


def test_no_slow_trip_without_threshold() -> None:
    """Without ``slow_call_ms`` no call is ever slow."""
    cb = breaker(failure_threshold=100, window_size=2, min_calls=1)
    for i in range(5):
        assert ok(cb, float(i), latency_ms=1e9) is None
    assert cb.slow_rate == 0.0


def test_cooldown_doubles_up_to_max_and_failed_after_trips() -> None:
    """Each repeated trip doubles the cooldown up to the max; ``failed`` marks the Nth trip."""
    cb = breaker(failure_threshold=1, failed_after_trips=3)
    t = fail(cb, 0.0)
    assert t is not None
    cooldowns = [t.evidence["cooldown_s"]]
    failed = [t.failed]
    now = 0.0
    for _ in range(4):
        assert cb.open_until is not None
        now = cb.open_until
        h = cb.poll(now)
        assert h is not None
        assert (h.from_state, h.to_state) == (OPEN, HALF_OPEN)
        t = fail(cb, now, probe=True)
        assert t is not None
        assert (t.from_state, t.to_state) == (HALF_OPEN, OPEN)
        assert t.open_until == now + t.evidence["cooldown_s"]
        cooldowns.append(t.evidence["cooldown_s"])
        failed.append(t.failed)
    assert cooldowns == [10.0, 20.0, 35.0, 35.0, 35.0]
    assert failed == [False, False, True, False, False]
    assert cb.trips == 5


def test_half_open_probe_success_closes_and_resets() -> None:
    """A successful half-open probe closes the circuit, resets trips and reports the outage."""
    cb = breaker(failure_threshold=1)
    fail(cb, 100.0)
    assert cb.poll(105.0) is None  # cooldown not over
    assert cb.next_deadline() == 110.0
    assert cb.poll(110.0) is not None
    assert cb.next_deadline() is None
    t = ok(cb, 112.0, probe=True)
    assert t is not None
    assert (t.from_state, t.to_state) == (HALF_OPEN, CLOSED)
    assert t.unhealthy_for_s == 12.0
    assert t.trips == 0
    assert cb.trips == 0
    assert cb.consecutive_failures == 0
    assert cb.calls == 0
    # After a recovery, the next trip starts again at the base cooldown.
    t = fail(cb, 200.0)
    assert t is not None
    assert t.evidence["cooldown_s"] == 10.0


def test_non_probe_outcomes_ignored_while_not_closed() -> None:
    """Late outcomes of calls started before the trip change nothing while open or half-open."""
    cb = breaker(failure_threshold=1)
    fail(cb, 0.0)
    assert ok(cb, 1.0) is None
    assert fail(cb, 2.0) is None
    assert cb.state == OPEN
    cb.poll(10.0)
    assert ok(cb, 11.0) is None
    assert cb.state == HALF_OPEN
    assert cb.trips == 1


def test_probe_while_open_keeps_transitions_chained() -> None:
    """A probe outcome arriving while open carries the implied open->half-open step with it."""
    cb = breaker(failure_threshold=1)
    fail(cb, 0.0)
    t = ok(cb, 10.0, probe=True)
    assert t is not None
    assert (t.from_state, t.to_state) == (HALF_OPEN, CLOSED)
    assert t.prior is not None
    assert (t.prior.from_state, t.prior.to_state) == (OPEN, HALF_OPEN)
    fail(cb, 20.0)
    assert cb.open_until is not None
    t = fail(cb, cb.open_until, probe=True)
    assert t is not None
    assert (t.from_state, t.to_state) == (HALF_OPEN, OPEN)
    assert t.prior is not None
    assert t.prior.from_state == OPEN
    # In half-open there is no step to imply.
    cb.poll(cb.open_until or 0.0)
    t = ok(cb, 1000.0, probe=True)
    assert t is not None
    assert t.prior is None


def test_counts_against_health() -> None:
    """Request-side errors and saturation are not evidence against health; others are."""
    assert counts_against_health(None) is False
    for err in (BadRequest, ContextLengthExceeded, ProviderSaturated, StreamCancelled):
        assert counts_against_health(err("x")) is False
    for err in (
        AuthenticationError,
        QuotaExceeded,
        RateLimited,
        ProviderUnavailable,
        ProviderTimeout,
        ProtocolError,
        StreamInterrupted,
    ):
        assert counts_against_health(err("x")) is True


STEP = st.one_of(
    st.tuples(st.just("ok"), st.booleans(), st.floats(0, 2000)),
    st.tuples(st.just("fail"), st.booleans(), st.floats(0, 2000)),
    st.tuples(st.just("poll"), st.just(False), st.just(0.0)),
)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(STEP, st.floats(0, 40)), max_size=60),
    threshold=st.integers(1, 4),
    window=st.integers(1, 8),
    data=st.data(),
)
def test_only_legal_transitions(
    steps: list[tuple[tuple[str, bool, float], float]],
    threshold: int,
    window: int,
    data: st.DataObject,
) -> None:
    """Any sequence of outcomes, probes and polls only makes legal, chained transitions."""
    min_calls = data.draw(st.integers(1, window))
    failed_after = data.draw(st.integers(1, 4))
    cb = breaker(
        failure_threshold=threshold,
        window_size=window,
        min_calls=min_calls,
        error_rate_threshold=data.draw(st.floats(0.1, 1.0)),
        slow_call_ms=data.draw(st.one_of(st.none(), st.floats(1, 1000))),
        failed_after_trips=failed_after,
    )
    now = 0.0
    state = cb.state
    for (kind, probe, latency), dt in steps:
        now += dt
        if kind == "poll":
            t = cb.poll(now)
        else:
            t = cb.record(ok=kind == "ok", latency_ms=latency, now=now, probe=probe)
        if t is None:
            assert cb.state == state
            continue
        if t.prior is not None:
            assert (t.prior.from_state, t.prior.to_state) in LEGAL
            assert t.prior.from_state == state
            state = t.prior.to_state
        assert (t.from_state, t.to_state) in LEGAL
        assert t.from_state == state
        assert t.to_state == cb.state
        assert t.trips == cb.trips
        assert t.failed == (t.to_state == OPEN and cb.trips == failed_after)
        if t.to_state == OPEN:
            assert t.open_until is not None
            assert t.open_until > now
        state = cb.state
