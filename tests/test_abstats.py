"""Tests of the A/B statistics: the always-valid sequential test, simulated, and the metrics."""

from __future__ import annotations

import math
import random

import pytest

from routeledger._abstats import METRICS, ABTestStats, Observation, SequentialTest
from routeledger._estimates import Moments

RUNS = 200
"""Seeded A/A runs per metric: enough that a false-winner rate far above 5 % would show."""


def simulated_test(
    seed: int,
    metric: str,
    *,
    requests: int = 1000,
    error_rates: tuple[float, float] = (0.1, 0.1),
    latency_factor_b: float = 1.0,
) -> ABTestStats:
    """Run one simulated A/B test, peeked at every 50 requests (pure Python, no runtime)."""
    rng = random.Random(seed)
    stats = ABTestStats("t", {"A": "a", "B": "b"}, metric=metric, peek_every=50)
    for _ in range(requests):
        variant = "A" if rng.random() < 0.5 else "B"
        error = rng.random() < error_rates[variant == "B"]
        latency = rng.lognormvariate(4.0, 0.5) * (latency_factor_b if variant == "B" else 1.0)
        cost = 0.001 * (1 + rng.random())
        stats.add(variant, Observation(latency_ms=latency, cost=cost, error=error))
    return stats


@pytest.mark.parametrize("metric", ["error_rate", "latency", "cost_per_success"])
def test_aa_tests_peeked_every_50_requests_declare_a_winner_at_most_at_the_nominal_rate(
    metric: str,
) -> None:
    """In 200 seeded A/A runs peeked every 50 requests, at most 5 % declare a winner."""
    winners = sum(
        simulated_test(seed, metric).sequential.decided_at is not None for seed in range(RUNS)
    )
    assert winners <= 0.05 * RUNS


def test_a_fixed_horizon_test_peeked_as_often_would_not_hold_its_rate() -> None:
    """The same A/A runs judged by a naive z test at every peek declare far more winners.

    This shows the simulation has the power to catch a test that is invalid under peeking.
    """
    winners = 0
    for seed in range(RUNS):
        rng = random.Random(seed)
        groups = {"A": Moments(), "B": Moments()}
        for i in range(1000):
            groups["A" if rng.random() < 0.5 else "B"].add(rng.lognormvariate(4.0, 0.5))
            a, b = groups["A"], groups["B"]
            if (i + 1) % 50 == 0 and min(a.n, b.n) > 2:
                se = math.sqrt(a.ratio_variance() + b.ratio_variance())
                if abs(b.ratio() - a.ratio()) / se > 1.96:
                    winners += 1
                    break
    assert winners > 0.1 * RUNS


@pytest.mark.parametrize(
    ("metric", "kwargs", "winner"),
    [
        ("error_rate", {"error_rates": (0.10, 0.20)}, "A"),
        ("latency", {"latency_factor_b": 0.8}, "B"),
        ("success_rate", {"error_rates": (0.20, 0.10)}, "B"),
    ],
)
def test_a_real_difference_is_found_with_the_right_winner(
    metric: str, kwargs: dict[str, object], winner: str
) -> None:
    """A 10-point error-rate gap or a 20 % latency gap is found in 3000 requests."""
    found = 0
    for seed in range(20):
        c = simulated_test(seed, metric, requests=3000, **kwargs).comparison()  # type: ignore[arg-type]
        if c.winner is not None:
            assert c.winner == winner
            assert c.verdict == f"{winner} better"
            assert c.difference_ci is not None
            assert c.difference_ci[0] <= c.difference <= c.difference_ci[1]  # type: ignore[operator]
            found += 1
    assert found >= 18


def test_without_a_verdict_the_requests_still_needed_are_estimated() -> None:
    """A small real difference seen early gives 'not yet significant' and a positive estimate."""
    c = simulated_test(1, "latency", requests=300, latency_factor_b=1.05).comparison()
    assert c.winner is None
    assert c.verdict == "not yet significant"
    assert c.judged
    assert c.requests_needed is not None and c.requests_needed > 0
    # With that many more requests at the same difference, the estimate is close to a verdict.
    later = simulated_test(
        1, "latency", requests=300 + 4 * c.requests_needed, latency_factor_b=1.05
    )
    assert later.comparison().winner == "A"


def test_too_few_requests_are_never_judged() -> None:
    """Below min_requests per variant there is no verdict, however large the difference."""
    seq = SequentialTest(min_requests=30)
    a, b = Moments(), Moments()
    for i in range(29):
        a.add(float(i % 2))
        b.add(100.0 + i % 2)
    assert seq.peek(a, b) == 1.0
    assert seq.decided_at is None
    assert seq.requests_needed(a, b) == 2


def test_per_variant_figures_carry_intervals_around_their_estimates() -> None:
    """Each figure of a variant lies inside its own interval."""
    c = simulated_test(5, "cost", requests=400).comparison()
    for v in c.variants:
        assert v.error_rate_ci[0] <= v.error_rate <= v.error_rate_ci[1]
        for value, ci in (
            (v.latency_mean_ms, v.latency_mean_ci),
            (v.latency_p50_ms, v.latency_p50_ci),
            (v.latency_p95_ms, v.latency_p95_ci),
            (v.cost_mean, v.cost_mean_ci),
            (v.metric, v.metric_ci),
        ):
            assert value is not None and ci is not None
            assert ci[0] <= value <= ci[1]


def test_every_metric_is_documented_and_maps_an_observation() -> None:
    """Each registered metric has a description and handles a failed and a good request."""
    ok = Observation(latency_ms=10.0, cost=0.01, error=False, ttft_ms=3.0, output_tokens=7)
    bad = Observation(latency_ms=20.0, cost=None, error=True)
    for metric in METRICS.values():
        assert metric.description
        assert metric.pair(ok) is not None
        metric.pair(bad)  # may be None, must not raise
    assert METRICS["cost_per_success"].pair(bad) == (0.0, 0.0)
    assert METRICS["ttft"].pair(ok) == (3.0, 1.0)
