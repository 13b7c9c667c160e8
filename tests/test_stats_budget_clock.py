"""Tests of the latency EWMA and outcome stats, the concurrency budget, and the clocks."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger.actors._budget import Budget, CapacitySignal
from routeledger.actors._clock import SystemClock, VirtualClock
from routeledger.actors._messages import Outcome
from routeledger.actors._stats import ALPHA, FAILURE_PENALTY_MS, StatsTracker, peak_ewma
from routeledger.events import BadRequest, ProviderUnavailable, RateLimited

JOIN_TIMEOUT_S = 10.0


def outcome(latency_ms: float, error: Any = None, **kw: Any) -> Outcome:
    return Outcome("r", 1, "p", "m", latency_ms, kw.pop("ts", 1.0), error=error, **kw)


# --- peak EWMA ------------------------------------------------------------------------------


def test_peak_ewma_first_sample_and_peaks() -> None:
    """The first sample is taken as is, and a new peak is adopted at once."""
    assert peak_ewma(None, 120.0) == 120.0
    assert peak_ewma(100.0, 500.0) == 500.0


def test_peak_ewma_decays_by_alpha() -> None:
    """A lower sample moves the average down by ALPHA of the difference."""
    assert peak_ewma(100.0, 0.0) == pytest.approx(100.0 * (1 - ALPHA))
    assert peak_ewma(200.0, 100.0) == pytest.approx(200.0 - ALPHA * 100.0)


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(st.floats(0, 1e6), min_size=1, max_size=30))
def test_peak_ewma_stays_between_min_and_max(samples: list[float]) -> None:
    """The average never leaves the range of the samples and is at least the last sample."""
    cur: float | None = None
    for s in samples:
        cur = peak_ewma(cur, s)
        assert cur >= s
    assert cur is not None
    assert min(samples) <= cur <= max(samples)


def test_stats_success_updates_latency_and_ttft() -> None:
    """Successes fold latency and time to first token into their EWMAs and count."""
    tr = StatsTracker()
    s = tr.record(outcome(100.0, ttft_ms=20.0, ts=5.0))
    assert (s.latency_ms, s.ttft_ms, s.successes, s.last_used) == (100.0, 20.0, 1, 5.0)
    s = tr.record(outcome(50.0))
    assert s.latency_ms == pytest.approx(100.0 - ALPHA * 50.0)
    assert s.ttft_ms == 20.0


def test_stats_failures_are_penalised() -> None:
    """A fast failure counts as at least FAILURE_PENALTY_MS, so failing never looks fast."""
    tr = StatsTracker()
    tr.record(outcome(10.0))
    s = tr.record(outcome(1.0, ProviderUnavailable("x")))
    assert s.latency_ms is not None
    assert s.latency_ms >= FAILURE_PENALTY_MS
    assert s.failures == 1
    s = tr.record(outcome(1.0, RateLimited("slow down")))
    assert s.rate_limited == 1
    assert s.latency_ms >= FAILURE_PENALTY_MS


def test_stats_bad_request_not_penalised() -> None:
    """A BadRequest is the caller's fault: counted as a failure, latency untouched."""
    tr = StatsTracker()
    tr.record(outcome(10.0))
    s = tr.record(outcome(1.0, BadRequest("bad")))
    assert s.latency_ms == 10.0
    assert s.failures == 1
    assert s.rate_limited == 0


# --- budget ---------------------------------------------------------------------------------


def test_budget_acquire_release_and_peak() -> None:
    """Slots are reserved up to the limit, refused beyond it, and the peak is kept."""
    b = Budget(2)
    assert b.try_acquire()
    assert b.try_acquire()
    assert not b.try_acquire()
    assert b.load == 1.0
    b.release()
    b.release()
    b.release()  # an extra release never drives the count negative
    assert b.in_flight == 0
    assert b.peak == 2


def test_budget_set_limit_takes_effect_at_once() -> None:
    """Lowering the limit refuses new slots at once; raising it grants them at once."""
    b = Budget(3)
    assert b.try_acquire()
    assert b.try_acquire()
    assert b.set_limit(1) == 3
    assert not b.try_acquire()
    assert b.set_limit(5) == 1
    assert b.try_acquire()
    assert Budget(0).load == 1.0


def test_budget_never_exceeds_limit_under_threads() -> None:
    """Many threads acquiring and releasing never push in_flight above the limit."""
    limit = 3
    b = Budget(limit)
    over: list[int] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait(JOIN_TIMEOUT_S)
        for _ in range(3000):
            if b.try_acquire():
                if b.in_flight > limit:
                    over.append(b.in_flight)
                b.release()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
    assert not over
    assert b.in_flight == 0
    assert 1 <= b.peak <= limit


def test_release_and_raise_notify_capacity() -> None:
    """Releasing a slot or raising the limit bumps the capacity signal; lowering does not."""
    sig = CapacitySignal()
    b = Budget(1, sig)
    g = sig.generation
    b.try_acquire()
    b.release()
    assert sig.generation == g + 1
    b.set_limit(0)
    assert sig.generation == g + 1
    b.set_limit(2)
    assert sig.generation == g + 2


def test_capacity_signal_wakes_waiter() -> None:
    """A waiter blocked on the signal wakes when capacity is freed, and sees that it was."""
    sig = CapacitySignal()
    seen = sig.generation
    result: list[bool] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        result.append(sig.wait(seen, timeout=JOIN_TIMEOUT_S))

    t = threading.Thread(target=waiter)
    t.start()
    waiting.wait(JOIN_TIMEOUT_S)
    sig.notify()
    t.join(JOIN_TIMEOUT_S)
    assert result == [True]
    # A generation already passed returns at once, without waiting.
    assert sig.wait(seen, timeout=JOIN_TIMEOUT_S) is True
    assert sig.wait(sig.generation, timeout=0.0) is False


# --- clocks ---------------------------------------------------------------------------------


def test_virtual_clock_moves_only_forward() -> None:
    """A virtual clock advances on demand, never backward, and stamps from its epoch."""
    c = VirtualClock(start=1000.0)
    assert c.monotonic() == 0.0
    assert c.time() == 1000.0
    c.advance(2.5)
    c.sleep(0.5)
    c.sleep(-1.0)
    assert c.monotonic() == 3.0
    c.set(1.0)
    assert c.monotonic() == 3.0
    c.set(10.0)
    assert c.time() == 1010.0
    with pytest.raises(ValueError):
        c.advance(-1.0)


def test_virtual_sleep_until_wakes_on_advance() -> None:
    """A thread in sleep_until stays blocked until time passes its deadline, then returns False."""
    c = VirtualClock()
    cancel = threading.Event()
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(c.sleep_until(5.0, cancel)))
    t.start()
    c.advance(4.0)
    t.join(0.1)  # a short real join: the sleeper must still be waiting on virtual time
    assert t.is_alive()
    c.advance(1.0)
    t.join(JOIN_TIMEOUT_S)
    assert not t.is_alive()
    assert out == [False]


def test_virtual_sleep_until_wakes_on_cancel() -> None:
    """Setting ``cancel`` wakes a virtual sleeper, which reports it was cancelled."""
    c = VirtualClock()
    cancel = threading.Event()
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(c.sleep_until(100.0, cancel)))
    t.start()
    cancel.set()
    t.join(JOIN_TIMEOUT_S)
    assert not t.is_alive()
    assert out == [True]
    assert c.monotonic() == 0.0


def test_virtual_sleep_until_past_deadline_returns_at_once() -> None:
    """A deadline already reached returns immediately."""
    c = VirtualClock()
    c.advance(3.0)
    assert c.sleep_until(2.0, threading.Event()) is False


def test_system_clock_cancelled_sleep() -> None:
    """The system clock's sleep_until returns True at once when cancel is already set."""
    cancel = threading.Event()
    cancel.set()
    clock = SystemClock()
    assert clock.sleep_until(clock.monotonic() + 60.0, cancel) is True
    assert clock.time() > 1_600_000_000
    clock.sleep(0.0)
