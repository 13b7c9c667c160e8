"""Tests of the projections: metrics, usage and A/B folds, the histogram, live == replayed."""

from __future__ import annotations

import math
import random
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeledger._replay import replay
from routeledger.events import (
    ABMetricsRecorded,
    ABProjection,
    ABTestCreated,
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    Event,
    LatencyHistogram,
    MetricsProjection,
    Projections,
    ProviderMetrics,
    RequestCompleted,
    RequestError,
    RequestFailed,
    UsageProjection,
    decode_event,
    encode_event,
)
from routeledger.store import SQLiteStore

T0 = datetime(2024, 3, 6, 10, 30, tzinfo=UTC).timestamp()  # a Wednesday


def ok(
    provider: str = "p",
    latency: float = 100.0,
    *,
    ts: float = T0,
    cost: float | None = 0.01,
    tokens: tuple[int, int] = (10, 5),
) -> AttemptSucceeded:
    return AttemptSucceeded(
        ts=ts,
        request_id="r",
        attempt=1,
        provider=provider,
        model="m",
        latency_ms=latency,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=cost,
    )


def failed(provider: str = "p", *, ts: float = T0) -> AttemptFailed:
    return AttemptFailed(
        ts=ts, request_id="r", attempt=1, provider=provider, model="m", error="ProviderTimeout"
    )


def completed(
    model: str = "m",
    *,
    ts: float = T0,
    cost: float | None = 0.5,
    tokens: tuple[int, int] = (10, 5),
    cached: bool = False,
) -> RequestCompleted:
    return RequestCompleted(
        ts=ts,
        request_id="r",
        provider="p",
        model=model,
        attempts=1,
        latency_ms=10.0,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost=cost,
        cached=cached,
    )


def request_failed(*, ts: float = T0) -> RequestFailed:
    return RequestFailed(ts=ts, request_id="r", model="m", error="AllProvidersFailed")


def fold(projection: object, events: list[Event]) -> None:
    apply = projection.apply  # type: ignore[attr-defined]  # any projection class
    for position, event in enumerate(events, 1):
        apply(position, event)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(round(q * len(ordered), 9)))
    return ordered[rank - 1]


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_counts_attempts_tokens_cost_and_unpriced() -> None:
    """Attempts, successes, failures, tokens, known cost and unpriced successes are counted."""
    m = MetricsProjection()
    fold(
        m,
        [
            ok(cost=0.25, ts=T0),
            ok(cost=None, tokens=(1, 2), ts=T0 + 5),
            failed(ts=T0 + 9),
            ok(provider="q", latency=50.0, ts=T0 + 1),
        ],
    )
    p = m.snapshot()["p"]
    assert (p.requests, p.successes, p.failures) == (3, 2, 1)
    assert p.error_rate == pytest.approx(1 / 3)
    assert (p.input_tokens, p.output_tokens) == (11, 7)
    assert p.cost == 0.25
    assert p.unpriced_requests == 1
    assert p.last_used == T0 + 9
    assert p.latency_mean_ms == 100.0
    assert list(m.snapshot()) == ["p", "q"]


def test_metrics_latency_comes_from_successes_only() -> None:
    """Failed attempts do not move latency mean or percentiles."""
    m = MetricsProjection()
    fold(m, [ok(latency=10.0), ok(latency=30.0), failed()])
    p = m["p"]
    assert p.latency_mean_ms == 20.0
    assert p.latency_p50_ms == pytest.approx(10.0, rel=0.008)
    assert p.latency_p99_ms == pytest.approx(30.0, rel=0.008)


def test_metrics_only_failures_gives_zero_latency_and_full_error_rate() -> None:
    """A provider that only failed has error rate 1 and zero latency figures."""
    m = MetricsProjection()
    fold(m, [failed(), failed()])
    assert m["p"] == ProviderMetrics(
        provider="p", requests=2, failures=2, error_rate=1.0, last_used=T0
    )


def test_metrics_is_a_mapping_equal_to_a_plain_dict() -> None:
    """The projection compares equal to the dict of its figures, both ways round."""
    m = MetricsProjection()
    fold(m, [ok("b"), ok("a")])
    assert m == m.snapshot()
    assert m.snapshot() == m
    assert list(m) == ["a", "b"] and len(m) == 2
    with pytest.raises(KeyError):
        m["nope"]


def test_metrics_ignores_other_events_and_sanitises_bad_numbers() -> None:
    """Unrelated events are ignored; NaN latency counts as 0 and infinite cost as unknown."""
    m = MetricsProjection()
    fold(
        m,
        [
            AttemptStarted(ts=T0, request_id="r", attempt=1, provider="p", model="m"),
            ok(latency=math.nan, cost=math.inf),
        ],
    )
    p = m["p"]
    assert p.requests == 1 and p.latency_mean_ms == 0.0 and p.unpriced_requests == 1


# --- histogram -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_quantiles_within_precision_of_exact(seed: int) -> None:
    """p50/p95/p99 from buckets are within 0.8 % of exact nearest-rank percentiles."""
    rng = random.Random(seed)
    values = [rng.lognormvariate(4, 1.5) for _ in range(5000)]
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    for q in (0.5, 0.95, 0.99, 0.999, 0.0, 1.0):
        assert h.quantile(q) == pytest.approx(nearest_rank(values, q), rel=1 / 128)


@given(st.lists(st.floats(min_value=0.0, max_value=3_600_000.0), min_size=1, max_size=200))
def test_histogram_any_values_within_precision(values: list[float]) -> None:
    """For any latencies up to an hour, quantiles are within 0.8 % (or 0.005 ms) of exact."""
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    for q in (0.5, 0.95, 0.99):
        exact = nearest_rank(values, q)
        assert abs(h.quantile(q) - exact) <= max(exact / 128, 0.005)


def test_histogram_memory_is_bounded() -> None:
    """The histogram holds a fixed number of counters however many values it sees."""
    h = LatencyHistogram()
    size = len(h.counts)
    for v in (0.0, 1e-9, 0.01, 1.0, 3_600_000.0, 1e12):
        h.record(v)
    assert len(h.counts) == size < 2000
    assert h.quantile(1.0) == 1e12  # clamped to the exact maximum
    assert LatencyHistogram().quantile(0.5) == 0.0


# --- usage -----------------------------------------------------------------------------------


def test_usage_counts_requests_errors_tokens_cost_and_models() -> None:
    """Completions add tokens and known cost per model; failures add requests and errors."""
    u = UsageProjection()
    fold(
        u,
        [
            completed("a", cost=0.5, tokens=(10, 5)),
            completed("b", cost=None, tokens=(1, 1)),
            completed("a", cost=0.25, tokens=(2, 3)),
            request_failed(),
        ],
    )
    r = u.report("day")
    assert (r.requests, r.errors, r.input_tokens, r.output_tokens) == (4, 1, 13, 9)
    assert r.cost == 0.75 and r.total_tokens == 22
    assert r.by_model["a"].input_tokens == 12 and r.by_model["a"].output_tokens == 8
    assert list(r.by_model) == ["a", "b"]


def test_usage_cached_answer_counts_request_but_no_tokens() -> None:
    """A cached answer counts as a request but consumed no tokens and cost nothing."""
    u = UsageProjection()
    fold(u, [completed(cached=True, cost=1.0)])
    r = u.report("all")
    assert (r.requests, r.input_tokens, r.cost) == (1, 0, 0.0)


def test_usage_periods_are_utc_calendar_buckets() -> None:
    """hour/day/week/month buckets start on UTC boundaries; ISO weeks start on Monday."""
    u = UsageProjection()
    fold(u, [completed(ts=T0)])
    start = {p: u.report(p).start for p in ("hour", "day", "week", "month")}
    assert start["hour"] == datetime(2024, 3, 6, 10, tzinfo=UTC).timestamp()
    assert start["day"] == datetime(2024, 3, 6, tzinfo=UTC).timestamp()
    assert start["week"] == datetime(2024, 3, 4, tzinfo=UTC).timestamp()  # Monday
    assert start["month"] == datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    assert u.report("all").start is None


def test_usage_report_picks_bucket_of_now_or_latest_event() -> None:
    """``now`` selects the bucket; without it the latest event's bucket is reported."""
    u = UsageProjection()
    day1 = datetime(2024, 1, 31, 23, 59, tzinfo=UTC).timestamp()
    day2 = datetime(2024, 2, 1, 0, 1, tzinfo=UTC).timestamp()
    fold(u, [completed(ts=day1), completed(ts=day2), completed(ts=day2)])
    assert u.report("day").requests == 2
    assert u.report("day", now=day1).requests == 1
    assert u.report("month", now=day1).requests == 1
    assert u.report("week").requests == 3  # both days are in the same ISO week
    assert u.report("day", now=day2 + 86400 * 3).requests == 0
    assert u("all").requests == 3


def test_usage_reports_lists_buckets_in_time_order() -> None:
    """reports() gives one report per non-empty bucket, in time order, across year ends."""
    u = UsageProjection()
    times = [
        datetime(2024, 12, 31, 12, tzinfo=UTC).timestamp(),
        datetime(2023, 12, 1, tzinfo=UTC).timestamp(),
        datetime(2025, 1, 1, 1, tzinfo=UTC).timestamp(),
    ]
    fold(u, [completed(ts=t) for t in times])
    months = u.reports("month")
    assert [datetime.fromtimestamp(r.start or 0, UTC).strftime("%Y-%m") for r in months] == [
        "2023-12",
        "2024-12",
        "2025-01",
    ]
    weeks = u.reports("week")
    # 2024-12-31 (Tuesday) and 2025-01-01 share ISO week 2025-W01.
    assert [r.requests for r in weeks] == [1, 2]
    assert [r.requests for r in u.reports("all")] == [3]


def test_usage_unknown_period_raises_request_error() -> None:
    """An unknown period is refused with RequestError."""
    u = UsageProjection()
    with pytest.raises(RequestError, match="period"):
        u.report("fortnight")
    with pytest.raises(RequestError):
        u.reports("year")


def test_usage_empty_projection_reports_zero() -> None:
    """With no events every period reports zero."""
    u = UsageProjection()
    assert u.report("day").requests == 0
    assert u.reports("day") == []


# --- A/B -------------------------------------------------------------------------------------


def created(metrics: dict[str, dict[str, float]] | None = None, *, ts: float = T0) -> ABTestCreated:
    return ABTestCreated(
        ts=ts, name="t", variant_a="pa", variant_b="pb", split_ratio=0.5, metrics=metrics or {}
    )


def recorded(variant: str, latency: float, cost: float | None, error: bool = False) -> Event:
    return ABMetricsRecorded(
        ts=T0, test="t", variant=variant, latency_ms=latency, cost=cost, error=error
    )


def test_ab_results_mean_latency_cost_and_error_rate() -> None:
    """Recorded outcomes give means and error rates; an unknown cost stays out of the mean."""
    ab = ABProjection()
    fold(
        ab,
        [
            created(),
            recorded("A", 100.0, 0.2),
            recorded("A", 200.0, None, error=True),
            recorded("B", 50.0, 0.1),
        ],
    )
    res = ab.results("t")
    assert list(res) == ["A", "B"]
    a = res["A"]
    assert (a.provider, a.requests, a.errors) == ("pa", 2, 1)
    assert a.mean_latency_ms == 150.0 and a.mean_cost == 0.2 and a.error_rate == 0.5
    assert res["B"].provider == "pb" and res["B"].mean_cost == 0.1


def test_ab_seed_metrics_count_as_recorded() -> None:
    """Seed figures (snake_case or the original's camelCase) count as recorded outcomes."""
    ab = ABProjection()
    seeds = {
        "A": {"requests": 10, "avg_latency": 100.0, "avg_cost": 0.5, "error_rate": 0.2},
        "variantB": {"requests": 4, "avgLatency": 40.0, "errorRate": 0.25},
    }
    fold(ab, [created(seeds), recorded("A", 210.0, 0.5), recorded("B", 90.0, 0.3)])
    a, b = ab.results("t")["A"], ab.results("t")["B"]
    assert (a.requests, a.errors) == (11, 2)
    assert a.mean_latency_ms == pytest.approx(110.0)
    assert a.mean_cost == pytest.approx(0.5)
    assert (b.requests, b.errors, b.mean_latency_ms) == (5, 1, pytest.approx(50.0))
    assert b.mean_cost == pytest.approx(0.3)  # the seed gave no cost


def test_ab_recreating_same_test_keeps_figures_new_definition_resets() -> None:
    """The same definition again keeps results; a changed definition starts afresh."""
    ab = ABProjection()
    fold(ab, [created(ts=T0), recorded("A", 10.0, None), created(ts=T0 + 60)])
    assert ab.results("t")["A"].requests == 1
    changed = ABTestCreated(ts=T0 + 120, name="t", variant_a="pc", variant_b="pb", split_ratio=0.5)
    ab.apply(9, changed)
    assert ab.results("t")["A"].requests == 0 and ab.results("t")["A"].provider == "pc"


def test_ab_unknown_test_raises_request_error() -> None:
    """Asking for a test never seen raises RequestError; all_results lists known tests."""
    ab = ABProjection()
    with pytest.raises(RequestError, match="unknown A/B test"):
        ab.results("nope")
    fold(ab, [created()])
    assert list(ab.all_results()) == ["t"]


# --- the composite ---------------------------------------------------------------------------


def test_projections_forward_and_track_position() -> None:
    """The composite folds into all three projections and tracks position and count."""
    p = Projections()
    events: list[Event] = [ok(), completed(), created(), recorded("A", 1.0, None)]
    for position, event in enumerate(events, 10):
        p.apply(position, event)
    assert (p.position, p.events) == (13, 4)
    assert p.metrics["p"].requests == 1
    assert p.usage("all").requests == 1
    assert p.ab_results["t"]["A"].requests == 1
    snap = p.snapshot()
    assert snap.position == 13 and snap.usage_all.requests == 1


# --- Hypothesis: any sequence of events ------------------------------------------------------

PROVIDERS = st.sampled_from(["alpha", "beta", "gamma"])
MODELS = st.sampled_from(["m1", "m2", "m3"])
TS = st.floats(min_value=1.6e9, max_value=1.9e9)
LATENCY = st.floats(min_value=0.0, max_value=1e7)
COST = st.none() | st.floats(min_value=0.0, max_value=10.0)
TOKENS = st.integers(min_value=0, max_value=100_000)
TESTS = st.sampled_from(["t1", "t2"])


def _events() -> st.SearchStrategy[Event]:
    succeeded = st.builds(
        AttemptSucceeded,
        ts=TS,
        request_id=st.just("r"),
        attempt=st.integers(1, 3),
        provider=PROVIDERS,
        model=MODELS,
        latency_ms=LATENCY,
        input_tokens=TOKENS,
        output_tokens=TOKENS,
        cost=COST,
    )
    attempt_failed = st.builds(
        AttemptFailed,
        ts=TS,
        request_id=st.just("r"),
        attempt=st.integers(1, 3),
        provider=PROVIDERS,
        model=MODELS,
        error=st.sampled_from(["ProviderTimeout", "RateLimited"]),
    )
    done = st.builds(
        RequestCompleted,
        ts=TS,
        request_id=st.just("r"),
        provider=PROVIDERS,
        model=MODELS,
        attempts=st.integers(1, 3),
        latency_ms=LATENCY,
        input_tokens=TOKENS,
        output_tokens=TOKENS,
        cost=COST,
        cached=st.booleans(),
    )
    req_failed = st.builds(
        RequestFailed, ts=TS, request_id=st.just("r"), model=MODELS, error=st.just("X")
    )
    seed = st.fixed_dictionaries(
        {"requests": st.integers(0, 50).map(float)},
        optional={
            "avg_latency": LATENCY,
            "mean_cost": st.floats(0.0, 10.0),
            "error_rate": st.floats(0.0, 1.0),
        },
    )
    ab_created = st.builds(
        ABTestCreated,
        ts=TS,
        name=TESTS,
        variant_a=PROVIDERS,
        variant_b=PROVIDERS,
        split_ratio=st.floats(0.0, 1.0),
        metrics=st.dictionaries(st.sampled_from(["A", "B"]), seed, max_size=2),
    )
    ab_recorded = st.builds(
        ABMetricsRecorded,
        ts=TS,
        test=TESTS,
        variant=st.sampled_from(["A", "B"]),
        latency_ms=LATENCY,
        cost=COST,
        error=st.booleans(),
    )
    other = st.builds(
        AttemptStarted,
        ts=TS,
        request_id=st.just("r"),
        attempt=st.just(1),
        provider=PROVIDERS,
        model=MODELS,
    )
    return st.one_of(succeeded, attempt_failed, done, req_failed, ab_created, ab_recorded, other)


EVENT_LISTS = st.lists(_events(), max_size=60)


@given(EVENT_LISTS)
def test_any_events_fold_the_same_after_encode_decode(events: list[Event]) -> None:
    """Folding events live equals folding their decoded wire form, for any sequence."""
    live, decoded = Projections(), Projections()
    for position, event in enumerate(events, 1):
        live.apply(position, event)
        decoded.apply(position, decode_event(encode_event(event), position=position))
    assert live.snapshot() == decoded.snapshot()


@given(EVENT_LISTS)
def test_any_events_totals_are_consistent(events: list[Event]) -> None:
    """Hourly buckets add up to ``all``; metrics requests equal attempt events per provider."""
    p = Projections()
    fold(p, events)
    snap = p.snapshot()
    assert sum(r.requests for r in snap.usage_hours) == snap.usage_all.requests
    for period in ("day", "week", "month"):
        assert sum(r.requests for r in p.usage.reports(period)) == snap.usage_all.requests
    attempts = [e for e in events if isinstance(e, AttemptSucceeded | AttemptFailed)]
    assert sum(m.requests for m in snap.metrics.values()) == len(attempts)
    for m in snap.metrics.values():
        assert m.latency_p50_ms <= m.latency_p95_ms <= m.latency_p99_ms


@settings(max_examples=40, deadline=None)
@given(events=EVENT_LISTS)
def test_any_events_live_equals_replayed_from_sqlite(events: list[Event]) -> None:
    """For any sequence, the live fold equals replay() of a SQLite log holding the events."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.sqlite"
        live = Projections()
        store = SQLiteStore(path)
        try:
            positions = store.append(events)
        finally:
            store.close()
        for position, event in zip(positions, events, strict=True):
            live.apply(position, event)
        assert replay(path).snapshot() == live.snapshot()
