"""Tests of the per-request failover policy, driven by hand one effect at a time."""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger.actors._budget import Budget
from routeledger.actors._clock import VirtualClock
from routeledger.actors._failover import (
    AwaitCapacity,
    Choose,
    Pause,
    Record,
    RetryBudget,
    Send,
    backoff_delay,
    run_request,
)
from routeledger.actors._messages import Backoff, Decision, RouteQuery
from routeledger.events import (
    AllProvidersFailed,
    AllProvidersSaturated,
    AuthenticationError,
    BadRequest,
    DeadlineExceeded,
    FailoverConfig,
    Message,
    ModelSpec,
    NoCapableProvider,
    ProtocolError,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Request,
    Response,
    RouteResult,
)

MODEL = ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=1.0)


class Run:
    """Drives :func:`run_request` by hand and records what it yields and how it ends."""

    def __init__(
        self, *, deadline_s: float = 60.0, seed: int = 0, stream: bool = False, **failover: Any
    ) -> None:
        self.clock = VirtualClock()
        self.request = Request(
            model="m",
            messages=[Message(role="user", content="hi")],
            request_id="req-1",
            stream=stream,
        )
        self.failover = FailoverConfig(**failover)
        self.deadline_at = deadline_s
        self.budgets: dict[str, Budget] = {}
        self.gen: Generator[Any, Any, Any] = run_request(
            RouteQuery(self.request),
            failover=self.failover,
            timeouts={"a": 30.0, "b": 30.0, "c": 30.0},
            clock=self.clock,
            rng=random.Random(seed),
            started=0.0,
            deadline_at=deadline_s,
        )
        self.effects: list[Any] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self._step(lambda: next(self.gen))

    @property
    def effect(self) -> Any:
        return self.effects[-1]

    def _step(self, fn: Any) -> None:
        try:
            self.effects.append(fn())
        except StopIteration as stop:
            self.done, self.result = True, stop.value
        except Exception as exc:
            self.done, self.error = True, exc

    def send(self, value: Any = None) -> Any:
        """Answer the current effect; return the next one."""
        self._step(lambda: self.gen.send(value))
        return None if self.done else self.effect

    def throw(self, exc: BaseException) -> Any:
        """Make the current effect fail with ``exc``; return the next one."""
        self._step(lambda: self.gen.throw(exc))
        return None if self.done else self.effect

    def decision(self, provider: str, attempt: int = 1) -> Decision:
        """Return a decision for ``provider`` holding one reserved slot."""
        budget = self.budgets.setdefault(provider, Budget(10))
        assert budget.try_acquire()
        route = RouteResult(provider=provider, model="m", reason="test", confidence=1.0)
        return Decision(route, MODEL, budget, attempt)

    def answer(self, provider: str) -> Response:
        return Response(content="ok", provider=provider, model="m", request_id="")

    def reports(self) -> list[Record]:
        return [e for e in self.effects if isinstance(e, Record)]

    def finals(self) -> list[Record]:
        return [r for r in self.reports() if r.ended is not None]


def test_success_first_try() -> None:
    """A first successful call returns the response with one final report."""
    run = Run()
    assert run.effect == Choose(1, {}, frozenset())
    call = run.send(run.decision("a"))
    assert isinstance(call, Send)
    assert call.timeout_s == 30.0
    run.clock.advance(0.25)
    report = run.send(run.answer("a"))
    assert isinstance(report, Record)
    assert report.outcome is not None
    assert report.outcome.ok
    assert report.ended is not None
    assert report.ended.error is None
    run.send()
    assert run.done
    assert run.result.attempts == 1
    assert run.result.latency_ms == pytest.approx(250.0)
    assert run.result.request_id == "req-1"


def test_bad_request_ends_at_once() -> None:
    """A BadRequest is raised as the provider gave it, after one failure and one final report."""
    run = Run(max_attempts=5)
    run.send(run.decision("a"))
    err = BadRequest("no", status=400)
    report = run.throw(err)
    assert report.outcome.error is err
    assert report.ended is None
    final = run.send()
    assert final.ended.error is err
    run.send()
    assert run.error is err
    assert err.provider == "a"
    assert err.request_id == "req-1"
    assert len(run.finals()) == 1


def test_retryable_error_moves_to_another_provider() -> None:
    """A retryable failure bans the provider (one attempt each by default) and tries another."""
    run = Run(max_attempts=3)
    run.send(run.decision("a"))
    run.throw(ProviderUnavailable("503", status=503))
    decide = run.send()
    assert decide == Choose(2, {"a": 1}, frozenset({"a"}))
    run.send(run.decision("b", 2))
    report = run.send(run.answer("b"))
    assert report.ended.failed_providers == ("a",)
    run.send()
    assert run.result.provider == "b"
    assert run.result.attempts == 2


@pytest.mark.parametrize("err", [AuthenticationError, QuotaExceeded, ProtocolError])
def test_non_retryable_error_fails_over_but_bans(err: type[ProviderError]) -> None:
    """Auth, quota and protocol errors rule their provider out even when retries are allowed."""
    run = Run(max_attempts=4, max_attempts_per_provider=3)
    run.send(run.decision("a"))
    run.throw(err("x"))
    assert run.send() == Choose(2, {"a": 1}, frozenset({"a"}))


def test_retry_same_provider_waits_retry_after() -> None:
    """A retry of the same provider waits exactly the Retry-After, holding no slot meanwhile."""
    run = Run(max_attempts=5, max_attempts_per_provider=2)
    run.send(run.decision("a"))
    run.throw(RateLimited("429", retry_after_s=2.0))
    assert run.send() == Choose(2, {"a": 1}, frozenset(), {"a": 2.0})
    sleep = run.send(Backoff(2.0, "a"))
    assert sleep == Pause(2.0)
    assert run.budgets["a"].in_flight == 1  # the first call's only, which the executor releases
    run.clock.advance(sleep.seconds)
    assert run.send() == Choose(2, {"a": 1}, frozenset(), {"a": 2.0})
    assert isinstance(run.send(run.decision("a", 2)), Send)
    run.throw(RateLimited("429", retry_after_s=1.0))
    # Second failure on "a": max_attempts_per_provider is reached, but a rate limit that
    # says how long (and fits) is waited out rather than ending the request.
    assert run.send() == Choose(3, {"a": 2}, frozenset(), {"a": 3.0})
    run.send(run.decision("a", 3))
    run.throw(ProviderUnavailable("503", status=503))
    # Any other retryable error past the per-provider limit still bans it.
    assert run.send() == Choose(4, {"a": 3}, frozenset({"a"}), {"a": 3.0})


def test_a_lone_providers_retry_after_is_waited_out_under_the_default_limits() -> None:
    """With one attempt a provider (the default), a 429 Retry-After that fits is waited out."""
    run = Run(max_attempts=3)
    run.send(run.decision("a"))
    run.throw(RateLimited("429", retry_after_s=1.0))
    assert run.send() == Choose(2, {"a": 1}, frozenset(), {"a": 1.0})
    assert run.send(Backoff(1.0, "a")) == Pause(1.0)


def test_a_backoff_that_would_end_past_the_deadline_ends_the_request_at_once() -> None:
    """Told to wait past its deadline (a provider-wide rate limit), a request fails at once."""
    run = Run(max_attempts=3, deadline_s=5.0)
    record = run.send(Backoff(9.0, "a"))
    assert isinstance(record, Record) and record.ended is not None
    run.send()
    assert isinstance(run.error, DeadlineExceeded)
    assert "after the request's deadline" in str(run.error)


def test_retry_after_beyond_limit_bans() -> None:
    """A Retry-After longer than max_retry_after_s rules the provider out."""
    run = Run(max_attempts=5, max_attempts_per_provider=3, max_retry_after_s=10.0)
    run.send(run.decision("a"))
    run.throw(RateLimited("429", retry_after_s=11.0))
    assert run.send().banned == frozenset({"a"})


def test_retry_after_beyond_deadline_bans() -> None:
    """A Retry-After that would end past the deadline rules the provider out."""
    run = Run(deadline_s=5.0, max_attempts=5, max_attempts_per_provider=3)
    run.send(run.decision("a"))
    run.clock.advance(1.0)
    run.throw(RateLimited("429", retry_after_s=4.0))
    assert run.send().banned == frozenset({"a"})


def test_backoff_sleep_is_full_jitter() -> None:
    """Without Retry-After, the retry sleeps a full-jitter backoff within its cap."""
    run = Run(max_attempts=5, max_attempts_per_provider=3, backoff_base_s=0.5, backoff_max_s=3.0)
    run.send(run.decision("a"))
    run.throw(ProviderConnectError("refused"))
    decide = run.send()
    assert decide.banned == frozenset()
    expected = backoff_delay(1, base_s=0.5, max_s=3.0, rng=random.Random(0))
    assert 0.0 < expected <= 0.5
    assert decide.not_before == {"a": pytest.approx(expected)}


@settings(max_examples=200, deadline=None)
@given(
    tries=st.integers(0, 30),
    base=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 60.0),
    seed=st.integers(0, 2**32),
)
def test_backoff_delay_bounds(tries: int, base: float, cap: float, seed: int) -> None:
    """backoff_delay is uniform in [0, min(max, base*2**(tries-1))] and seed-reproducible."""
    d = backoff_delay(tries, base_s=base, max_s=cap, rng=random.Random(seed))
    assert 0.0 <= d <= min(cap, base * 2 ** max(0, tries - 1)) + 1e-12
    assert d == backoff_delay(tries, base_s=base, max_s=cap, rng=random.Random(seed))


def test_backoff_never_sleeps_past_deadline() -> None:
    """A backoff that would end past the deadline rules the provider out instead of sleeping."""
    for seed in range(20):
        run = Run(
            deadline_s=1.0,
            seed=seed,
            max_attempts=5,
            max_attempts_per_provider=3,
            backoff_base_s=5.0,
            backoff_max_s=5.0,
        )
        run.send(run.decision("a"))
        run.clock.advance(0.5)
        run.throw(ProviderUnavailable("503"))
        decide = run.send()
        if decide.banned:
            continue
        assert decide.not_before["a"] < run.deadline_at


def test_max_attempts_bounds_all_attempts() -> None:
    """After max_attempts failures on any providers the request fails with every error."""
    run = Run(max_attempts=2)
    run.send(run.decision("a"))
    run.throw(ProviderTimeout("t"))
    run.send()
    run.send(run.decision("b", 2))
    run.throw(ProviderTimeout("t"))
    final = run.send()
    assert final.ended is not None
    run.send()
    assert isinstance(run.error, AllProvidersFailed)
    assert [e.provider for e in run.error.attempts] == ["a", "b"]
    assert not any(isinstance(e, Choose) and e.attempt == 3 for e in run.effects)


def test_failover_disabled_means_one_attempt() -> None:
    """With failover disabled, one failure ends the request."""
    run = Run(enabled=False, max_attempts=5)
    run.send(run.decision("a"))
    run.throw(ProviderUnavailable("x"))
    run.send()
    run.send()
    assert isinstance(run.error, AllProvidersFailed)


def test_error_not_in_retryable_errors_stops() -> None:
    """An error type missing from retryable_errors stops at once with AllProvidersFailed."""
    run = Run(max_attempts=5, retryable_errors=["RateLimited"])
    run.send(run.decision("a"))
    run.throw(ProviderUnavailable("503"))
    final = run.send()
    assert isinstance(final.ended.error, AllProvidersFailed)
    run.send()
    assert isinstance(run.error, AllProvidersFailed)
    assert len(run.error.attempts) == 1


def test_deadline_exceeded() -> None:
    """When the deadline has passed at the next attempt, the request ends DeadlineExceeded."""
    run = Run(deadline_s=2.0, max_attempts=5)
    run.send(run.decision("a"))
    run.clock.advance(2.0)
    run.throw(ProviderTimeout("slow"))
    final = run.send()
    assert isinstance(final.ended.error, DeadlineExceeded)
    run.send()
    assert isinstance(run.error, DeadlineExceeded)


def test_call_timeout_capped_by_deadline() -> None:
    """An attempt's timeout never exceeds what is left of the deadline."""
    run = Run(deadline_s=10.0)
    run.clock.advance(7.0)
    call = run.send(run.decision("a"))
    assert call.timeout_s == pytest.approx(3.0)


def test_saturated_waits_then_fails() -> None:
    """No decision means wait for capacity; a failed wait ends AllProvidersSaturated."""
    run = Run(queue_timeout_s=2.0)
    wait = run.send(None)
    assert wait == AwaitCapacity(2.0)
    assert isinstance(run.send(True), Choose)
    run.clock.advance(0.5)
    wait = run.send(None)
    assert wait == AwaitCapacity(pytest.approx(1.5))
    final = run.send(False)
    assert isinstance(final.ended.error, AllProvidersSaturated)
    run.send()
    assert isinstance(run.error, AllProvidersSaturated)
    assert len(run.finals()) == 1


def test_routing_error_after_failures_becomes_all_failed() -> None:
    """A routing error after failed attempts is reported as AllProvidersFailed, keeping them."""
    run = Run(max_attempts=3)
    run.send(run.decision("a"))
    run.throw(ProviderUnavailable("x"))
    run.send()
    final = run.throw(NoCapableProvider("nothing left"))
    assert isinstance(final.ended.error, AllProvidersFailed)
    run.send()
    assert isinstance(run.error, AllProvidersFailed)
    # Without earlier failures the routing error is raised as is.
    run = Run()
    err = NoCapableProvider("none")
    run.throw(err)
    run.send()
    assert run.error is err


def test_no_slot_is_held_while_backing_off() -> None:
    """Closing a request while it waits out a Retry-After leaves no reserved slot behind."""
    run = Run(max_attempts=5, max_attempts_per_provider=2)
    run.send(run.decision("a"))
    run.throw(RateLimited("429", retry_after_s=1.0))
    run.send()
    assert run.send(Backoff(1.0, "a")) == Pause(1.0)
    run.gen.close()
    assert run.budgets["a"].in_flight == 1  # the first call's slot is the executor's


ERRORS = [
    BadRequest,
    RateLimited,
    ProviderUnavailable,
    ProviderTimeout,
    ProviderConnectError,
    AuthenticationError,
    QuotaExceeded,
    ProtocolError,
]


@settings(max_examples=150, deadline=None)
@given(
    script=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", None]),
            st.one_of(st.none(), st.sampled_from(ERRORS)),
            st.one_of(st.none(), st.floats(0, 20)),
            st.floats(0, 5),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    max_attempts=st.integers(1, 5),
    per_provider=st.integers(1, 3),
    deadline=st.floats(1, 30),
    seed=st.integers(0, 1000),
)
def test_every_path_reports_one_final(
    script: list[tuple[str | None, type[ProviderError] | None, float | None, float, bool]],
    max_attempts: int,
    per_provider: int,
    deadline: float,
    seed: int,
) -> None:
    """Whatever happens, the request ends with exactly one final report, within its bounds."""
    run = Run(
        deadline_s=deadline,
        seed=seed,
        max_attempts=max_attempts,
        max_attempts_per_provider=min(per_provider, max_attempts),
        queue_timeout_s=3.0,
    )
    steps = iter(script * 10)
    calls: dict[str, int] = {}
    waited: dict[str, int] = {}  # rate limits that said how long: waited out past the limit
    attempts = 0
    while not run.done:
        eff = run.effect
        provider, err, retry_after, took, freed = next(steps, ("a", None, None, 0.0, False))
        if isinstance(eff, Choose):
            if provider is None or provider in eff.banned:
                run.send(None)
            else:
                run.send(run.decision(provider, eff.attempt))
        elif isinstance(eff, Pause):
            assert eff.seconds >= 0
            run.clock.advance(eff.seconds)
            run.send()
        elif isinstance(eff, AwaitCapacity):
            assert eff.timeout_s > 0
            run.clock.advance(eff.timeout_s if not freed else 0.0)
            run.send(freed)
        elif isinstance(eff, Send):
            name = eff.decision.route.provider
            assert run.clock.monotonic() < run.deadline_at
            assert eff.timeout_s > 0
            calls[name] = calls.get(name, 0) + 1
            attempts += 1
            run.clock.advance(min(took, eff.timeout_s))
            eff.decision.budget.release()  # the executor's part
            if err is None:
                run.send(run.answer(name))
            else:
                if err is RateLimited and retry_after:
                    waited[name] = waited.get(name, 0) + 1
                run.throw(err("e", retry_after_s=retry_after))
        else:
            assert isinstance(eff, Record)
            run.send()
    assert len(run.finals()) == 1
    assert run.reports()[-1].ended is not None
    assert attempts <= max_attempts
    assert all(n <= min(per_provider, max_attempts) + waited.get(p, 0) for p, n in calls.items())
    assert all(b.in_flight == 0 for b in run.budgets.values())
    final = run.finals()[0].ended
    assert final is not None
    if run.error is None:
        assert isinstance(run.result, Response)
        assert final.response is run.result
    else:
        assert final.error is run.error


def test_a_retry_that_succeeds_costs_its_target_no_budget() -> None:
    """Successful retries are settled free: any number of them fit a budget of one."""
    budget = RetryBudget(ratio=0.0, minimum=1, window_s=10.0)
    for i in range(100):
        assert budget.allows(float(i) / 100)
        budget.spend(("r", i), float(i) / 100)
        assert not budget.allows(float(i) / 100)  # in flight: spent until it ends
        budget.settle(("r", i), float(i) / 100, wasted=False)
    assert budget.spent(1.0) == 0


def test_failed_retries_are_bounded_by_the_minimum_when_nothing_is_served() -> None:
    """A target that serves nothing takes ``minimum`` failed retries a window, then none."""
    budget = RetryBudget(ratio=0.2, minimum=3, window_s=10.0)
    taken = 0
    for i in range(50):
        now = i * 0.1
        if budget.allows(now):
            budget.spend(("r", i), now)
            budget.settle(("r", i), now, wasted=True)
            taken += 1
    assert taken == 3
    assert budget.allows(5.0 + 10.0)  # one window after the last failure: room again


def test_a_target_earns_room_from_the_calls_it_serves() -> None:
    """Failed retries may reach ``ratio`` of the calls the target served in the window."""
    budget = RetryBudget(ratio=0.2, minimum=1, window_s=10.0)
    for _ in range(50):
        budget.served(1.0)
    assert budget.allowance(1.0) == 10
    for i in range(10):
        assert budget.allows(2.0)
        budget.spend(("r", i), 2.0)
        budget.settle(("r", i), 2.0, wasted=True)
    assert not budget.allows(2.0)
    # The served calls leave the window first: the minimum applies again.
    assert budget.allowance(11.5) == 1
    assert not budget.allows(11.5)
    assert budget.allows(12.5)


def test_a_retry_whose_end_never_comes_stops_holding_the_budget_after_a_window() -> None:
    """An abandoned in-flight retry is forgotten one window after it was sent."""
    budget = RetryBudget(ratio=0.0, minimum=1, window_s=10.0)
    budget.spend(("lost", 2), 0.0)
    assert not budget.allows(9.9)
    assert budget.allows(10.1)
    assert budget.held() == 0
    budget.settle(("lost", 2), 10.2, wasted=False)  # a late end changes nothing
    assert budget.allows(10.2)
