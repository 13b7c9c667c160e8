"""Fixed-horizon estimates in flat memory: intervals, running moments, a quantile histogram.

Wilson intervals for rates, Student's t intervals for means (the t quantiles from the
regularised incomplete beta function, a continued fraction, and bisection), running means,
variances and covariance by Welford's update, and percentiles from a 1 % log-binned histogram
with distribution-free intervals from binomial ranks. Pure Python: the normal quantiles come
from :class:`statistics.NormalDist`; nothing here keeps the values it has seen.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

__all__ = [
    "Interval",
    "Moments",
    "QuantileHistogram",
    "mean_interval",
    "t_cdf",
    "t_quantile",
    "wilson_interval",
]

_NORMAL = NormalDist()


class Interval(NamedTuple):
    """A confidence interval ``[low, high]``."""

    low: float
    high: float


# --- intervals ------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> Interval:
    """Return the Wilson score interval of a rate of ``successes`` in ``n`` (``[0, 1]`` at 0)."""
    if n <= 0:
        return Interval(0.0, 1.0)
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Return the continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Return the regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Return ``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Return the ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def mean_interval(n: int, mean: float, variance: float, *, confidence: float = 0.95) -> Interval:
    """Return the t interval of a mean of ``n`` values of sample ``variance``."""
    if n < 2:
        return Interval(-math.inf, math.inf) if n == 0 else Interval(mean, mean)
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(max(variance, 0.0) / n)
    return Interval(mean - half, mean + half)


# --- running figures ------------------------------------------------------------------------


class Moments:
    """Running means, variances and covariance of pairs ``(x, y)`` (Welford's update).

    Sums of squares would cancel catastrophically on long logs of large latencies; Welford's
    form keeps the deviations from the running means instead.
    """

    __slots__ = ("cxy", "m2x", "m2y", "mean_x", "mean_y", "n")

    def __init__(self) -> None:
        self.n = 0
        self.mean_x = 0.0
        self.mean_y = 0.0
        self.m2x = 0.0
        self.m2y = 0.0
        self.cxy = 0.0

    def add(self, x: float, y: float = 1.0) -> None:
        """Count one pair."""
        self.n += 1
        dx = x - self.mean_x
        self.mean_x += dx / self.n
        dy = y - self.mean_y
        self.mean_y += dy / self.n
        self.m2x += dx * (x - self.mean_x)
        self.m2y += dy * (y - self.mean_y)
        self.cxy += dx * (y - self.mean_y)

    def ratio(self) -> float:
        """Return ``sum(x) / sum(y)`` (NaN when ``sum(y)`` is 0)."""
        return self.mean_x / self.mean_y if self.mean_y else math.nan

    def ratio_variance(self) -> float:
        """Return the variance of :meth:`ratio` as an estimate (delta method; NaN below 2)."""
        if self.n < 2 or not self.mean_y:
            return math.nan
        r = self.mean_x / self.mean_y
        sxx, syy, sxy = (m / (self.n - 1) for m in (self.m2x, self.m2y, self.cxy))
        return max(sxx - 2 * r * sxy + r * r * syy, 0.0) / (self.n * self.mean_y**2)


class QuantileHistogram:
    """Count values in log-spaced bins (1 % wide) to read percentiles in flat memory.

    A percentile read here is within 1 % of the exact one; zero and negative values share one
    bin at 0.
    """

    __slots__ = ("bins", "n")

    _LOG_STEP = math.log(1.01)

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.n = 0

    def add(self, value: float) -> None:
        """Count one value."""
        key = math.floor(math.log(value) / self._LOG_STEP) if value > 0 else -(2**31)
        self.bins[key] = self.bins.get(key, 0) + 1
        self.n += 1

    def merge(self, other: QuantileHistogram) -> None:
        """Add every value counted in ``other``."""
        for key, count in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + count
        self.n += other.n

    def at_rank(self, rank: int) -> float:
        """Return the value of the ``rank``-th smallest value (1-based, clamped to ``[1, n]``)."""
        if self.n == 0:
            return math.nan
        rank = min(max(rank, 1), self.n)
        seen = 0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen >= rank:
                return 0.0 if key == -(2**31) else math.exp((key + 0.5) * self._LOG_STEP)
        raise AssertionError("unreachable: ranks are clamped to the count")

    def quantile(self, q: float) -> float:
        """Return the ``q`` quantile (NaN when empty)."""
        return self.at_rank(math.ceil(q * self.n))

    def quantile_interval(self, q: float, *, confidence: float = 0.95) -> Interval:
        """Return a distribution-free interval of the ``q`` quantile from binomial ranks."""
        if self.n == 0:
            return Interval(math.nan, math.nan)
        z = _NORMAL.inv_cdf(0.5 + confidence / 2)
        spread = z * math.sqrt(self.n * q * (1 - q))
        low = math.floor(self.n * q - spread)
        high = math.ceil(self.n * q + spread) + 1
        return Interval(self.at_rank(low), self.at_rank(high))
