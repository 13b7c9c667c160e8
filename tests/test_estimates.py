"""Tests of the fixed-horizon estimates: Wilson and t intervals, moments, percentiles."""

from __future__ import annotations

import math
import random

import pytest

from routeledger._estimates import (
    Moments,
    QuantileHistogram,
    mean_interval,
    t_cdf,
    t_quantile,
    wilson_interval,
)


def test_wilson_interval_matches_the_published_values() -> None:
    """The Wilson interval of 81 in 263 at 95 % is [0.2553, 0.3662] (Wallis 2013)."""
    low, high = wilson_interval(81, 263)
    assert low == pytest.approx(0.2553, abs=5e-4)
    assert high == pytest.approx(0.3662, abs=5e-4)
    assert wilson_interval(0, 10).low == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("df", "expected"), [(1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042)]
)
def test_t_quantile_matches_the_tables(df: int, expected: float) -> None:
    """The 97.5 % quantile of Student's t agrees with the printed tables to 3 decimals."""
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-3)


def test_mean_interval_is_the_t_interval() -> None:
    """A mean of 10 values of variance 4 gets mean +- t(0.975, 9) * 2 / sqrt(10)."""
    low, high = mean_interval(10, 5.0, 4.0)
    half = 2.262 * 2 / math.sqrt(10)
    assert (low, high) == pytest.approx((5 - half, 5 + half), abs=1e-3)


def test_moments_give_the_ratio_and_its_delta_method_variance() -> None:
    """With denominators all 1 the ratio is the mean and its variance is s^2 / n."""
    m = Moments()
    for x in (1.0, 2.0, 3.0, 4.0):
        m.add(x)
    assert m.ratio() == pytest.approx(2.5)
    assert m.ratio_variance() == pytest.approx((5 / 3) / 4)


def test_histogram_percentiles_are_within_one_percent_and_in_their_interval() -> None:
    """Percentiles read from the log-binned histogram are within 1 % of the exact ones."""
    rng = random.Random(3)
    values = sorted(rng.lognormvariate(3, 1) for _ in range(5000))
    hist = QuantileHistogram()
    for v in values:
        hist.add(v)
    for q in (0.5, 0.95):
        exact = values[math.ceil(q * len(values)) - 1]
        assert hist.quantile(q) == pytest.approx(exact, rel=0.011)
        low, high = hist.quantile_interval(q)
        assert low <= hist.quantile(q) <= high


def test_t_cdf_is_a_distribution_symmetric_about_zero() -> None:
    """The t CDF is 0.5 at 0, symmetric, and tends to the normal one for many degrees."""
    assert t_cdf(0.0, 5) == pytest.approx(0.5)
    assert t_cdf(-1.3, 7) == pytest.approx(1 - t_cdf(1.3, 7))
    assert t_cdf(1.96, 10_000) == pytest.approx(0.975, abs=1e-3)
