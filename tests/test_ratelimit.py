"""Provider-wide rate limits: reset headers, the ``provider.rate_limited`` fold, waiting it out.

Header fixtures are transcribed from the providers' documentation: OpenAI's rate-limit guide
(``x-ratelimit-*``, Go-style durations) and Anthropic's (``anthropic-ratelimit-*``, RFC 3339).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from routeledger import (
    FailoverConfig,
    HealthConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    ProviderUnavailable,
    RateLimited,
    Request,
    Runtime,
    RuntimeConfig,
    VirtualClock,
)
from routeledger.actors._messages import Backoff, Decision, Outcome, RouteQuery
from routeledger.actors._ratelimit import MAX_MARK_S, RateLimitMarks
from routeledger.actors.wire import error_from_status, parse_retry_after
from routeledger.actors.wire._resets import parse_duration, parse_instant, reset_after
from routeledger.events import (
    AttemptFailed,
    AttemptStarted,
    ProviderRateLimited,
    RouteDecided,
    RoutingProjection,
    event_tag,
)
from routeledger.sim import Simulation, scenario_from_dict
from routeledger.store import SQLiteStore
from routeledger.testing import Behaviour, FakeProvider, no_backoff

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
MODEL = "fake-model"

# OpenAI's guide, "Rate limits in headers": a 429 for requests (the requests limit is spent).
OPENAI_REQUESTS_SPENT = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
# Anthropic's "Response headers": every limit's limit, remaining and RFC 3339 reset.
ANTHROPIC_TOKENS_SPENT = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:01Z",
    "anthropic-ratelimit-tokens-limit": "40000",
    "anthropic-ratelimit-tokens-remaining": "0",
    "anthropic-ratelimit-tokens-reset": "2024-05-01T12:00:30Z",
    "anthropic-ratelimit-input-tokens-limit": "30000",
    "anthropic-ratelimit-input-tokens-remaining": "0",
    "anthropic-ratelimit-input-tokens-reset": "2024-05-01T12:00:20Z",
}


# --- reset headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("12ms", 0.012),
        ("1h2m3.5s", 3723.5),
        ("250us", 0.00025),
        ("0.5", 0.5),
        ("7", 7.0),
    ],
)
def test_openai_reset_durations_parse_to_seconds(text: str, seconds: float) -> None:
    """Go-style durations (and the plain seconds some compatible servers send) are read."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "s", "1s2", "-1s", "1 s", "nan", "inf"])
def test_garbage_durations_are_not_read(text: str) -> None:
    """A reset that is not a duration gives no wait at all, never a guess."""
    assert parse_duration(text) is None


def test_rfc3339_instants_are_read_relative_to_the_wall_clock() -> None:
    """An RFC 3339 reset is the seconds until it; a past one is now; one without offset is not."""
    assert parse_instant("2024-05-01T12:00:30Z", now=NOW) == 30.0
    assert parse_instant("2024-05-01T14:00:30+02:00", now=NOW) == 30.0
    assert parse_instant("2024-05-01T11:00:00Z", now=NOW) == 0.0
    assert parse_instant("2024-05-01T12:00:30", now=NOW) is None
    assert parse_instant("tomorrow", now=NOW) is None


def test_the_openai_limit_that_is_spent_sets_the_wait() -> None:
    """Requests spent: the requests reset (1 s) is the wait, not the tokens' 6 minutes."""
    assert reset_after(httpx.Headers(OPENAI_REQUESTS_SPENT), clock=lambda: NOW) == 1.0
    tokens_spent = dict(OPENAI_REQUESTS_SPENT)
    tokens_spent["x-ratelimit-remaining-requests"] = "59"
    tokens_spent["x-ratelimit-remaining-tokens"] = "0"
    assert reset_after(httpx.Headers(tokens_spent), clock=lambda: NOW) == 360.0


def test_with_no_limit_spent_the_earliest_reset_is_the_wait() -> None:
    """No remaining count is zero (a request too big for what is left): the first reset."""
    headers = {
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-reset-tokens": "9ms",
    }
    assert reset_after(httpx.Headers(headers), clock=lambda: NOW) == pytest.approx(0.009)


def test_the_latest_reset_of_the_spent_anthropic_limits_is_the_wait() -> None:
    """Two Anthropic limits spent: the later of their resets (30 s), the other limit ignored."""
    assert reset_after(httpx.Headers(ANTHROPIC_TOKENS_SPENT), clock=lambda: NOW) == 30.0


def test_no_reset_headers_give_no_wait() -> None:
    """Without reset headers (or only limits and counts) nothing is said: ``None``."""
    assert reset_after(httpx.Headers({}), clock=lambda: NOW) is None
    only_counts = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-limit-requests": "60"}
    assert reset_after(httpx.Headers(only_counts), clock=lambda: NOW) is None


def test_retry_after_and_retry_after_ms_win_over_the_reset_headers() -> None:
    """A ``Retry-After`` (or ``retry-after-ms``) is what the provider asked: it wins."""
    headers = dict(OPENAI_REQUESTS_SPENT)
    assert parse_retry_after(httpx.Headers(headers), clock=lambda: NOW) == 1.0
    headers["retry-after"] = "3"
    assert parse_retry_after(httpx.Headers(headers), clock=lambda: NOW) == 3.0
    headers["retry-after-ms"] = "250"
    assert parse_retry_after(httpx.Headers(headers), clock=lambda: NOW) == 0.25


@pytest.mark.parametrize(
    ("headers", "body", "wait"),
    [
        (
            OPENAI_REQUESTS_SPENT,
            b'{"error": {"message": "Rate limit reached for requests", "type": "requests",'
            b' "param": null, "code": "rate_limit_exceeded"}}',
            1.0,
        ),
        (
            ANTHROPIC_TOKENS_SPENT,
            b'{"type": "error", "error": {"type": "rate_limit_error",'
            b' "message": "Number of request tokens has exceeded your per-minute rate limit"}}',
            30.0,
        ),
    ],
    ids=["openai", "anthropic"],
)
def test_a_429_with_only_reset_headers_is_rate_limited_for_their_wait(
    headers: dict[str, str], body: bytes, wait: float
) -> None:
    """A 429 that names no Retry-After still says how long, through its reset headers."""
    error = error_from_status(429, httpx.Headers(headers), body, clock=lambda: NOW)
    assert isinstance(error, RateLimited)
    assert error.retry_after_s == wait


# --- the fold ----------------------------------------------------------------------------------


def limited(provider: str, until: float) -> ProviderRateLimited:
    return ProviderRateLimited(provider=provider, until=until, retry_after_s=1.0, ts=until - 1.0)


def test_the_latest_until_wins_in_any_order() -> None:
    """Folding is order-free: the later ``until`` holds, whichever event came last."""
    events = [limited("a", 10.0), limited("a", 30.0), limited("a", 20.0), limited("b", 5.0)]
    for order in (events, events[::-1]):
        limits = RateLimitMarks(order)
        assert (limits.until("a"), limits.until("b"), limits.until("c")) == (30.0, 5.0, None)
        assert limits.wait("a", 25.0) == 5.0
        assert limits.wait("a", 31.0) == 0.0
        assert limits.wait("c", 0.0) == 0.0


def outcome(error: Exception | None) -> Outcome:
    return Outcome(
        request_id="r", attempt=1, provider="a", model="m", latency_ms=1.0, error=error, ts=0.0
    )


def test_only_a_rate_limit_that_says_how_long_marks_the_provider() -> None:
    """A 429 with a wait marks ``a`` until then (capped); one without, or another error, not."""
    event = RateLimitMarks.marked(outcome(RateLimited("429", retry_after_s=2.0)), 100.0)
    assert event is not None
    assert (event.provider, event.until, event.retry_after_s, event.request_id) == (
        "a",
        102.0,
        2.0,
        "r",
    )
    assert RateLimitMarks.marked(outcome(RateLimited("429")), 100.0) is None
    assert RateLimitMarks.marked(outcome(RateLimited("429", retry_after_s=0.0)), 100.0) is None
    assert RateLimitMarks.marked(outcome(None), 100.0) is None
    huge = RateLimitMarks.marked(outcome(RateLimited("429", retry_after_s=1e12)), 100.0)
    assert huge is not None and huge.until == 100.0 + MAX_MARK_S


def test_a_503_that_says_how_long_marks_the_provider_and_other_5xx_do_not() -> None:
    """A 503 with ``Retry-After`` speaks for the provider (RFC 9110); a 500 or 502 with one not."""
    unavailable = ProviderUnavailable("503", status=503, retry_after_s=3.0)
    event = RateLimitMarks.marked(outcome(unavailable), 100.0)
    assert event is not None and (event.until, event.retry_after_s) == (103.0, 3.0)
    assert RateLimitMarks.marked(outcome(ProviderUnavailable("503", status=503)), 100.0) is None
    for status in (500, 502):
        other = ProviderUnavailable(str(status), status=status, retry_after_s=3.0)
        assert RateLimitMarks.marked(outcome(other), 100.0) is None


# --- the simulation: the router skips, then waits for, a rate-limited provider -----------------


def sim_provider(name: str, **sim: Any) -> dict[str, Any]:
    return {
        "name": name,
        "models": [{"name": "m", "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
        "sim": {"latency_ms": 10, **sim},
    }


def test_other_requests_skip_a_rate_limited_provider_until_its_retry_after_ends() -> None:
    """After ``a``'s 429 (Retry-After 2 s), no request goes to ``a`` for 2 s; ``b`` serves."""
    scenario = scenario_from_dict(
        {
            "simulation": {"requests": 60, "rate_per_s": 20.0, "model": "m"},
            "providers": [
                sim_provider("a", rate_limit_per_s=3, retry_after_s=2.0) | {"priority": 10},
                sim_provider("b"),
            ],
        }
    )
    sim = Simulation(scenario, seed=1)
    result = sim.run()
    assert result.failed == 0
    log = [event for _, event in sim.store.read()]
    marks = [e for e in log if isinstance(e, ProviderRateLimited)]
    assert marks and all(m.provider == "a" and m.retry_after_s == 2.0 for m in marks)
    for mark in marks:
        sent = [
            e
            for e in log
            if isinstance(e, AttemptStarted) and e.provider == "a" and mark.ts < e.ts < mark.until
        ]
        assert sent == []
    skipped = [
        e for e in log if isinstance(e, RouteDecided) and "rate limited" in e.excluded.get("a", "")
    ]
    assert skipped and all(e.chosen == "b" for e in skipped)
    # Without the provider-wide mark every request after the first 429 would have knocked.
    refused = [e for e in log if isinstance(e, AttemptFailed) and e.error == "RateLimited"]
    assert len(refused) == len(marks)


def test_a_lone_rate_limited_provider_is_waited_for_within_the_deadline() -> None:
    """With no other provider, requests wait for ``a``'s Retry-After and then succeed."""
    scenario = scenario_from_dict(
        {
            "simulation": {"requests": 6, "rate_per_s": 50.0, "model": "m", "deadline_s": 10.0},
            "providers": [sim_provider("a", rate_limit_per_s=5, retry_after_s=1.0)],
        }
    )
    sim = Simulation(scenario, seed=2)
    result = sim.run()
    log = [event for _, event in sim.store.read()]
    assert result.completed == 6
    waits = [e for e in log if isinstance(e, RouteDecided) and e.chosen is None]
    assert waits and all(e.reason.startswith("every candidate is rate limited") for e in waits)


def test_a_restart_and_a_replay_fold_the_same_rate_limit() -> None:
    """The routing projection keeps the latest mark: what a restarted router folds."""
    projection = RoutingProjection()
    for i, event in enumerate([limited("a", 30.0), limited("a", 10.0), limited("b", 5.0)]):
        projection.apply(i + 1, event)
    assert {n: e.until for n, e in projection.rate_limited.items()} == {"a": 30.0, "b": 5.0}
    state = projection.state()
    again = RoutingProjection()
    again.load_state(state)
    assert again.rate_limited == projection.rate_limited


# --- end to end through the loopback fake provider ---------------------------------------------


def seed_failing_first(rate: float = 0.5) -> int:
    """Return a fake-provider seed whose first request fails at ``rate`` and second does not."""
    for seed in range(10_000):
        rng = random.Random(seed)
        first = rng.random()
        rng.random()  # the jitter draw
        if first < rate <= rng.random():
            return seed
    raise AssertionError("no such seed")


def config(
    *fakes: tuple[str, FakeProvider], failover: FailoverConfig, kind: str = "openai"
) -> RuntimeConfig:
    return RuntimeConfig(
        providers=[
            ProviderConfig(
                name=name,
                kind=kind,
                base_url=fake.url + "/v1",
                models=[ModelSpec(name=MODEL, input_per_mtok=1.0, output_per_mtok=2.0)],
                priority=10 - i,
                timeout_s=5.0,
            )
            for i, (name, fake) in enumerate(fakes)
        ],
        failover=failover,
        health=HealthConfig(failure_threshold=5),
        seed=0,
    )


def request() -> Request:
    return Request(model=MODEL, messages=[Message(role="user", content="hello")], max_tokens=8)


def events_of(db: Path) -> list[Any]:
    store = SQLiteStore(db, readonly=True)
    try:
        return [s.event for s in store.read()]
    finally:
        store.close()


@pytest.fixture
def fake_429_once() -> Iterator[FakeProvider]:
    """A fake whose first request is refused with 429 ``Retry-After: 1``, the next served."""
    beh = Behaviour(fail_rate=0.5, fail_status=429, retry_after="1")
    with FakeProvider(beh, seed=seed_failing_first()) as fake:
        yield fake


def test_complete_waits_out_a_lone_providers_retry_after_under_the_default_failover(
    tmp_path: Path, fake_429_once: FakeProvider
) -> None:
    """Defaults, one provider, 429 Retry-After 1: ``complete()`` waits 1 s and succeeds."""
    db = tmp_path / "log.sqlite"
    clock = VirtualClock()
    cfg = config(("a", fake_429_once), failover=FailoverConfig())
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        response = rt.complete(request())
        rt.flush()
    assert (response.provider, response.attempts) == ("a", 2)
    assert clock.monotonic() >= 1.0
    log = events_of(db)
    (mark,) = [e for e in log if isinstance(e, ProviderRateLimited)]
    assert (mark.provider, mark.retry_after_s, mark.until) == ("a", 1.0, mark.ts + 1.0)
    waited = [e for e in log if isinstance(e, RouteDecided) and e.chosen is None]
    assert [e.reason for e in waited] == ["every candidate is rate limited; retry 'a' in 1 s"]
    assert waited[0].excluded == {"a": "rate limited for 1 s more (provider-wide)"}


def test_a_restarted_runtime_still_skips_a_provider_rate_limited_before_it_stopped(
    tmp_path: Path,
) -> None:
    """The mark is folded from the log: a runtime restarted within it routes around ``a``."""
    db = tmp_path / "log.sqlite"
    clock = VirtualClock()
    with (
        FakeProvider(Behaviour(status=429, retry_after="20")) as a,
        FakeProvider(Behaviour()) as b,
    ):
        cfg = config(("a", a), ("b", b), failover=no_backoff())
        with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
            assert rt.complete(request()).provider == "b"
        clock.advance(5.0)
        with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
            second = rt.complete(request())
            rt.flush()
        assert (second.provider, second.attempts) == ("b", 1)
        assert a.stats.requests == 1
    decided = [
        e
        for e in events_of(db)
        if isinstance(e, RouteDecided) and e.request_id == second.request_id
    ]
    assert decided[0].excluded == {"a": "rate limited for 15 s more (provider-wide)"}
    assert event_tag(limited("a", 1.0)) == "provider.rate_limited"


def test_a_503_with_retry_after_keeps_other_requests_away_from_the_provider(
    tmp_path: Path,
) -> None:
    """``a`` answers 503 ``Retry-After: 20``: ``b`` serves, and the next request skips ``a``."""
    db = tmp_path / "log.sqlite"
    with (
        FakeProvider(Behaviour(status=503, retry_after="20")) as a,
        FakeProvider(Behaviour()) as b,
    ):
        cfg = config(("a", a), ("b", b), failover=no_backoff())
        with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
            first = rt.complete(request())
            second = rt.complete(request())
            rt.flush()
        assert (first.provider, first.attempts, second.provider, second.attempts) == (
            "b",
            2,
            "b",
            1,
        )
        assert a.stats.requests == 1
    (mark,) = [e for e in events_of(db) if isinstance(e, ProviderRateLimited)]
    assert (mark.provider, mark.retry_after_s) == ("a", 20.0)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_the_reset_headers_alone_make_a_second_request_wait_for_the_fakes_own_limit(
    tmp_path: Path, kind: str
) -> None:
    """One request a 0.3 s window, no Retry-After: the second waits out the reset and succeeds."""
    db = tmp_path / "log.sqlite"
    beh = Behaviour(rate_limit_requests=1, rate_limit_window_s=0.3, rate_limit_reset_only=True)
    with FakeProvider(beh) as fake:
        cfg = config(("a", fake), failover=FailoverConfig(), kind=kind)
        with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
            assert rt.complete(request()).attempts == 1
            second = rt.complete(request())
            rt.flush()
        assert (second.provider, second.attempts) == ("a", 2)
        assert fake.stats.requests == 3
    (mark,) = [e for e in events_of(db) if isinstance(e, ProviderRateLimited)]
    assert 0.0 < mark.retry_after_s <= 0.3


def test_a_marked_provider_is_waited_for_when_the_other_is_at_its_rpm_limit() -> None:
    """``a`` asked for 1 s, ``b`` (rpm 1) has no headroom for a minute: wait 1 s, for ``a``."""
    scenario = scenario_from_dict(
        {
            "simulation": {"requests": 0, "model": "m"},
            "providers": [sim_provider("a") | {"priority": 10}, sim_provider("b") | {"rpm": 1}],
        }
    )
    sim = Simulation(scenario, seed=0)
    now = sim.clock.time()
    sim.router.marks.apply(
        ProviderRateLimited(provider="a", until=now + 1.0, retry_after_s=1.0, ts=now)
    )

    def decide(i: int) -> Any:
        req = Request(model="m", messages=[Message(role="user", content="hi")], request_id=f"r{i}")
        return sim.router.decide(RouteQuery(req), attempt=1, tried={})

    first = decide(1)
    assert isinstance(first, Decision) and first.route.provider == "b"
    first.budget.release()
    second = decide(2)
    assert isinstance(second, Backoff)
    assert (second.provider, second.rate_limited) == ("a", False)
    assert second.seconds == pytest.approx(1.0)
