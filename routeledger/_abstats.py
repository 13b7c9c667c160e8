"""A/B statistics: intervals per variant and an always-valid sequential test between them.

People look at A/B results continuously, so a fixed-horizon test (look once, at a sample size
chosen in advance) would declare false winners far more often than its nominal rate. The
verdict here comes from the mixture sequential probability ratio test (mSPRT) of Johari,
Pekelis and Walsh, "Always valid inference: continuous monitoring of A/B tests" (2017), with
a normal mixture over the difference: for an estimated difference ``d`` of variance ``V`` and a
mixing variance ``tau2``,

    Lambda = sqrt(V / (V + tau2)) * exp(tau2 * d**2 / (2 * V * (V + tau2)))

and the always-valid p-value is the running minimum of ``1 / Lambda``. By Ville's inequality
the chance that it ever drops below ``alpha`` under no difference is at most ``alpha``, however
often (and whenever) someone looks. Its confidence sequence, the differences not rejected, is
the interval reported with the difference.

Figures per variant carry ordinary (fixed-horizon) intervals from :mod:`routeledger._estimates`:
Wilson for rates, Student's t for means, order-statistic ranks for percentiles. Everything is
streaming, so memory stays flat whatever the log's length; pure Python throughout.

Metrics (:data:`METRICS`) are defined after the fact from the logged outcome of each request:
each maps an :class:`Observation` to a ``(numerator, denominator)`` pair, and the metric's
value is ``sum(numerators) / sum(denominators)`` (a mean when every denominator is 1, a ratio
such as cost per successful request otherwise, its variance by the delta method).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from routeledger._estimates import (
    Interval,
    Moments,
    QuantileHistogram,
    mean_interval,
    t_quantile,
    wilson_interval,
)

__all__ = [
    "METRICS",
    "ABComparison",
    "ABTestStats",
    "Metric",
    "Observation",
    "SequentialTest",
    "VariantFigures",
    "always_valid_interval",
    "msprt_log_lambda",
]


# --- metrics --------------------------------------------------------------------------------


class Observation(NamedTuple):
    """The logged outcome of one request counted in an A/B test."""

    latency_ms: float
    cost: float | None
    error: bool
    ttft_ms: float | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Metric:
    """A figure compared between variants, computed from each request's :class:`Observation`.

    ``pair`` returns ``(numerator, denominator)`` for one request, or ``None`` when the request
    says nothing about the metric (a failed request has no time to first token).
    """

    name: str
    description: str
    unit: str
    lower_is_better: bool
    pair: Callable[[Observation], tuple[float, float] | None]
    binary: bool = False


def _latency(o: Observation) -> tuple[float, float]:
    return (o.latency_ms, 1.0)


def _error(o: Observation) -> tuple[float, float]:
    return (1.0 if o.error else 0.0, 1.0)


def _success(o: Observation) -> tuple[float, float]:
    return (0.0 if o.error else 1.0, 1.0)


def _cost(o: Observation) -> tuple[float, float] | None:
    return None if o.cost is None else (o.cost, 1.0)


def _cost_per_success(o: Observation) -> tuple[float, float]:
    return (o.cost or 0.0, 0.0 if o.error else 1.0)


def _ttft(o: Observation) -> tuple[float, float] | None:
    return None if o.ttft_ms is None or o.error else (o.ttft_ms, 1.0)


def _tokens(o: Observation) -> tuple[float, float] | None:
    return None if o.output_tokens is None or o.error else (float(o.output_tokens), 1.0)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("error_rate", "share of requests that failed", "", True, _error, binary=True),
        Metric("success_rate", "share of requests that succeeded", "", False, _success, True),
        Metric("latency", "mean request latency (failed requests too)", "ms", True, _latency),
        Metric("ttft", "mean time to first token of successful streams", "ms", True, _ttft),
        Metric("cost", "mean cost of requests with a known cost", "$", True, _cost),
        Metric(
            "cost_per_success",
            "total cost over successful requests (failed requests' cost counts)",
            "$",
            True,
            _cost_per_success,
        ),
        Metric("output_tokens", "mean output tokens of successful requests", "", False, _tokens),
    )
}
"""The metrics ``routeledger ab --metric`` accepts, by name."""


# --- the sequential test --------------------------------------------------------------------


def msprt_log_lambda(delta: float, variance: float, tau2: float) -> float:
    """Return ``log Lambda`` of the normal-mixture SPRT for an estimate ``delta`` (``variance``)."""
    total = variance + tau2
    return 0.5 * math.log(variance / total) + tau2 * delta * delta / (2 * variance * total)


def always_valid_interval(delta: float, variance: float, tau2: float, alpha: float) -> Interval:
    """Return the differences the mSPRT does not reject at ``alpha`` (its confidence sequence)."""
    total = variance + tau2
    half = math.sqrt(
        variance * total / tau2 * (2 * math.log(1 / alpha) + math.log(total / variance))
    )
    return Interval(delta - half, delta + half)


class SequentialTest:
    """Compare two variants' metric with the mSPRT, keeping the always-valid p-value.

    Call :meth:`peek` whenever someone looks (after every request is fine: looking more often
    never inflates the error rate). No verdict is possible before each variant has
    ``min_requests`` measured requests and a non-zero variance.

    Args:
        alpha: the error rate accepted for declaring a winner.
        effect: the mixing standard deviation, in units of the metric's standard deviation:
            the size of difference the test is most sensitive to (Johari et al. choose it from
            past experiments; 0.1 standard deviations suits most routing comparisons).
        binary: the metric is a rate: under "no difference" both variants share one rate, so
            the variance is pooled.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        effect: float = 0.1,
        min_requests: int = 30,
        binary: bool = False,
    ) -> None:
        self.alpha = alpha
        self.effect = effect
        self.min_requests = min_requests
        self.binary = binary
        self.p_value = 1.0
        self.decided_at: int | None = None
        """How many requests the test had counted when the p-value first fell below alpha."""
        self.decided_sign = 0

    def estimate(self, a: Moments, b: Moments) -> tuple[float, float, float] | None:
        """Return ``(difference B - A, its variance, tau2)``; ``None`` before it can be judged."""
        if min(a.n, b.n) < max(self.min_requests, 2) or not (a.mean_y and b.mean_y):
            return None
        delta = b.ratio() - a.ratio()
        if self.binary:
            pooled = (a.mean_x * a.n + b.mean_x * b.n) / (a.mean_y * a.n + b.mean_y * b.n)
            unit = pooled * (1 - pooled)
            variance = unit / (a.n * a.mean_y) + unit / (b.n * b.mean_y)
        else:
            va, vb = a.ratio_variance(), b.ratio_variance()
            variance = va + vb
            # Per-request variance (on the metric's scale) of both variants, to scale tau.
            unit = (va * a.n + vb * b.n) / 2
        if not variance > 0 or not math.isfinite(variance):
            return None
        return delta, variance, (self.effect**2) * unit

    def peek(self, a: Moments, b: Moments) -> float:
        """Look at the figures now; return the always-valid p-value so far."""
        est = self.estimate(a, b)
        if est is None:
            return self.p_value
        delta, variance, tau2 = est
        log_lambda = msprt_log_lambda(delta, variance, tau2)
        p = math.exp(-log_lambda) if log_lambda > 0 else 1.0
        if p < self.p_value:
            self.p_value = p
            if p <= self.alpha and self.decided_at is None:
                self.decided_at = a.n + b.n
                self.decided_sign = 1 if delta > 0 else -1
        return self.p_value

    def interval(self, a: Moments, b: Moments) -> Interval | None:
        """Return the always-valid interval of the difference B - A now (``None``: too early)."""
        est = self.estimate(a, b)
        if est is None:
            return None
        delta, variance, tau2 = est
        return always_valid_interval(delta, variance, tau2, self.alpha)

    def requests_needed(self, a: Moments, b: Moments) -> int | None:
        """Estimate how many more requests (at the current split) a verdict needs.

        Assumes the difference seen so far is the true one; ``None`` when no difference has
        been seen (or the figures cannot be judged yet).
        """
        if self.decided_at is not None:
            return 0
        if min(a.n, b.n) < self.min_requests and a.n + b.n > 0:
            # Too early to judge: the requests until the smaller variant has enough.
            share = min(a.n, b.n) / (a.n + b.n)
            if share == 0:
                return None
            return math.ceil(self.min_requests / share) - (a.n + b.n)
        est = self.estimate(a, b)
        if est is None:
            return None
        delta, variance, tau2 = est
        target = math.log(1 / self.alpha)

        def crosses(k: float) -> bool:
            return msprt_log_lambda(delta, variance / k, tau2) >= target

        if delta == 0 or not crosses(1e9):
            return None
        low, high = 1.0, 2.0
        while not crosses(high):
            low, high = high, high * 2
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (low, mid) if crosses(mid) else (mid, high)
        return max(1, math.ceil((high - 1) * (a.n + b.n)))


# --- a test's figures -----------------------------------------------------------------------


class VariantFigures(msgspec.Struct, frozen=True, kw_only=True):
    """One variant's figures with 95 % intervals (``[low, high]``; ``None``: no data)."""

    variant: str
    provider: str
    requests: int
    errors: int
    error_rate: float
    error_rate_ci: tuple[float, float]
    latency_mean_ms: float | None
    latency_mean_ci: tuple[float, float] | None
    latency_p50_ms: float | None
    latency_p50_ci: tuple[float, float] | None
    latency_p95_ms: float | None
    latency_p95_ci: tuple[float, float] | None
    cost_mean: float | None
    cost_mean_ci: tuple[float, float] | None
    metric: float | None
    metric_ci: tuple[float, float] | None
    metric_requests: int


class ABComparison(msgspec.Struct, frozen=True, kw_only=True):
    """The result of one A/B test on one metric."""

    test: str
    metric: str
    metric_description: str
    lower_is_better: bool
    variants: list[VariantFigures]
    difference: float | None
    """Metric of B minus metric of A."""
    difference_ci: tuple[float, float] | None
    """Always-valid (1 - alpha) interval of the difference: valid however often one looks."""
    p_value: float
    """Always-valid p-value (the running minimum over every look)."""
    alpha: float
    verdict: str
    """``"A better"``, ``"B better"`` or ``"not yet significant"``."""
    winner: str | None
    requests_needed: int | None
    """Further requests a verdict needs if the current difference holds (``None``: unknown);
    while ``judged`` is false, the requests until each variant has ``min_requests``."""
    judged: bool
    """Each variant has enough measured requests (``min_requests``) for the test to judge."""
    min_requests: int
    method: str


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _pair(interval: Interval) -> tuple[float, float] | None:
    low, high = interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return (low, high)


class _Variant:
    __slots__ = ("cost", "errors", "latency", "latency_hist", "metric", "provider", "requests")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.requests = 0
        self.errors = 0
        self.latency = Moments()
        self.latency_hist = QuantileHistogram()
        self.cost = Moments()
        self.metric = Moments()


class ABTestStats:
    """Fold the outcomes of one A/B test into per-variant figures and a sequential test.

    Args:
        name: the test's name.
        providers: the provider of each variant (``{"A": ..., "B": ...}``).
        metric: the metric compared (a key of :data:`METRICS`).
        peek_every: look at the sequential test after this many outcomes (1: after each).
        alpha: see :class:`SequentialTest`.
    """

    def __init__(
        self,
        name: str,
        providers: dict[str, str],
        *,
        metric: str = "error_rate",
        peek_every: int = 1,
        alpha: float = 0.05,
    ) -> None:
        self.name = name
        self.metric = METRICS[metric]
        self.peek_every = max(1, peek_every)
        self.variants = {v: _Variant(providers.get(v, "")) for v in ("A", "B")}
        self.sequential = SequentialTest(alpha=alpha, binary=self.metric.binary)
        self._count = 0

    def add(self, variant: str, observation: Observation) -> None:
        """Count one request's outcome under ``variant`` (other variants than A and B ignored)."""
        state = self.variants.get(variant)
        if state is None:
            return
        state.requests += 1
        state.errors += observation.error
        if math.isfinite(observation.latency_ms):
            state.latency.add(observation.latency_ms)
            state.latency_hist.add(observation.latency_ms)
        if observation.cost is not None and math.isfinite(observation.cost):
            state.cost.add(observation.cost)
        pair = self.metric.pair(observation)
        if pair is not None and all(map(math.isfinite, pair)):
            state.metric.add(*pair)
        self._count += 1
        if self._count % self.peek_every == 0:
            self.sequential.peek(self.variants["A"].metric, self.variants["B"].metric)

    def comparison(self) -> ABComparison:
        """Return the figures now (looking once more at the sequential test)."""
        a, b = self.variants["A"].metric, self.variants["B"].metric
        seq = self.sequential
        p = seq.peek(a, b)
        interval = seq.interval(a, b)
        delta = b.ratio() - a.ratio() if a.mean_y and b.mean_y else math.nan
        winner: str | None = None
        if seq.decided_at is not None:
            b_higher = seq.decided_sign > 0
            winner = "A" if b_higher == self.metric.lower_is_better else "B"
        return ABComparison(
            test=self.name,
            metric=self.metric.name,
            metric_description=self.metric.description,
            lower_is_better=self.metric.lower_is_better,
            variants=[self._figures(v, s) for v, s in self.variants.items()],
            difference=_finite(delta),
            difference_ci=None if interval is None else _pair(interval),
            p_value=p,
            alpha=seq.alpha,
            verdict="not yet significant" if winner is None else f"{winner} better",
            winner=winner,
            requests_needed=seq.requests_needed(a, b),
            judged=min(a.n, b.n) >= seq.min_requests,
            min_requests=seq.min_requests,
            method=(
                f"mSPRT, normal mixture (Johari et al. 2017), always-valid at alpha={seq.alpha}; "
                f"variant figures: 95% Wilson (rates), t (means), binomial ranks (percentiles)"
            ),
        )

    def _figures(self, variant: str, s: _Variant) -> VariantFigures:
        lat, cost, metric, hist = s.latency, s.cost, s.metric, s.latency_hist
        return VariantFigures(
            variant=variant,
            provider=s.provider,
            requests=s.requests,
            errors=s.errors,
            error_rate=s.errors / s.requests if s.requests else 0.0,
            error_rate_ci=_bounds(wilson_interval(s.errors, s.requests)),
            latency_mean_ms=lat.mean_x if lat.n else None,
            latency_mean_ci=_pair(mean_interval(lat.n, lat.mean_x, _var(lat))) if lat.n else None,
            latency_p50_ms=hist.quantile(0.5) if hist.n else None,
            latency_p50_ci=_bounds(hist.quantile_interval(0.5)) if hist.n else None,
            latency_p95_ms=hist.quantile(0.95) if hist.n else None,
            latency_p95_ci=_bounds(hist.quantile_interval(0.95)) if hist.n else None,
            cost_mean=cost.mean_x if cost.n else None,
            cost_mean_ci=_pair(mean_interval(cost.n, cost.mean_x, _var(cost))) if cost.n else None,
            metric=_finite(metric.ratio()) if metric.n else None,
            metric_ci=_metric_interval(metric),
            metric_requests=metric.n,
        )


def _bounds(interval: Interval) -> tuple[float, float]:
    return (interval.low, interval.high)


def _var(m: Moments) -> float:
    return m.m2x / (m.n - 1) if m.n > 1 else 0.0


def _metric_interval(m: Moments) -> tuple[float, float] | None:
    variance = m.ratio_variance()
    if not math.isfinite(variance):
        return None
    half = t_quantile(0.975, m.n - 1) * math.sqrt(variance)
    return (m.ratio() - half, m.ratio() + half)
