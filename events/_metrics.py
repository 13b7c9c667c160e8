"""The per-provider metrics fold, with its bounded log-linear latency histogram."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import msgspec

from routeledger.events._events import (
    CANCELLATIONS,
    AttemptFailed,
    AttemptSucceeded,
    Event,
)
from routeledger.events._fold import Handler, _cost, _latency
from routeledger.events._types import ProviderMetrics

__all__ = ["HistogramState", "LatencyHistogram", "MetricsProjection", "MetricsState"]


# --- latency histogram ------------------------------------------------------------------------

_UNIT_MS = 0.01
"""Smallest resolved latency; everything below it shares bucket 0."""
_SUB_BUCKETS = 64
"""Linear sub-buckets per power of two: a bucket's half-width is at most 1/128 (< 0.8 %) of
the values in it, so a midpoint is within 0.8 % of any value it stands for."""
_OCTAVES = 29
"""Powers of two above ``_UNIT_MS``: 0.01 ms * 2**29 is about 90 minutes (> 1 hour)."""
_BUCKETS = 1 + _OCTAVES * _SUB_BUCKETS
_LAST = _BUCKETS - 1
_QUANTILES_BP = (5000, 9500, 9900)
"""p50, p95, p99 in basis points: integer ranks avoid float rounding in ``q * n``."""


def _bucket_of(latency_ms: float) -> int:
    scaled = latency_ms / _UNIT_MS
    if scaled < 1.0:
        return 0
    mantissa, exponent = math.frexp(scaled)  # scaled = mantissa * 2**exponent, mantissa in [.5, 1)
    index = 1 + (exponent - 1) * _SUB_BUCKETS + int((mantissa * 2.0 - 1.0) * _SUB_BUCKETS)
    return index if index < _LAST else _LAST


def _bucket_mid(index: int) -> float:
    if index == 0:
        return _UNIT_MS / 2
    octave, sub = divmod(index - 1, _SUB_BUCKETS)
    width = float(2**octave) / _SUB_BUCKETS
    return (float(2**octave) + (sub + 0.5) * width) * _UNIT_MS


class LatencyHistogram:
    """A fixed log-linear histogram of latencies in milliseconds (HdrHistogram-like).

    Memory is bounded (1,857 counters) whatever the number of samples; buckets are linear
    inside each power of two from 0.01 ms to about 90 minutes, so quantiles are within 0.8 %
    of the exact value (0.005 ms absolute below 0.01 ms). Larger values share the last bucket,
    whose quantiles are reported as the exact maximum seen.
    Quantiles use the nearest-rank definition and are clamped to the exact minimum and maximum
    seen, so a quantile never lies outside the observed range.
    """

    __slots__ = ("count", "counts", "max", "min")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.min = math.inf
        self.max = 0.0

    def record(self, latency_ms: float) -> None:
        """Count one latency (already sanitised: finite and non-negative)."""
        self.counts[_bucket_of(latency_ms)] += 1
        self.count += 1
        if latency_ms < self.min:
            self.min = latency_ms
        if latency_ms > self.max:
            self.max = latency_ms

    def quantiles(self, basis_points: tuple[int, ...]) -> list[float]:
        """Return the nearest-rank quantile for each of ``basis_points`` (ascending, /10,000).

        All zeros when nothing was recorded.
        """
        n = self.count
        if n == 0:
            return [0.0] * len(basis_points)
        # Nearest rank: the smallest value with at least ceil(q * n) values at or below it.
        ranks = [max(1, (n * bp + 9999) // 10000) for bp in basis_points]
        out: list[float] = []
        seen = 0
        want = 0
        for index, count in enumerate(self.counts):
            if not count:
                continue
            seen += count
            while want < len(ranks) and ranks[want] <= seen:
                # The last bucket is open-ended: the exact maximum is its only honest value.
                mid = self.max if index == _LAST else _bucket_mid(index)
                out.append(min(max(mid, self.min), self.max))
                want += 1
            if want == len(ranks):
                break
        return out

    def quantile(self, q: float) -> float:
        """Return the nearest-rank quantile ``q`` (in [0, 1])."""
        return self.quantiles((round(q * 10000),))[0]

    def state(self) -> HistogramState:
        """Return the histogram as plain data (only the buckets that hold a count)."""
        return HistogramState(
            buckets=[(i, c) for i, c in enumerate(self.counts) if c],
            count=self.count,
            min=self.min,
            max=self.max,
        )

    @classmethod
    def from_state(cls, state: HistogramState) -> LatencyHistogram:
        """Return a histogram holding ``state``.

        Raises:
            ValueError: a bucket index is out of range or the counts do not add up.
        """
        histogram = cls()
        for index, count in state.buckets:
            if not 0 <= index < _BUCKETS or count <= 0:
                raise ValueError(f"histogram bucket {index}: {count} is not a bucket count")
            histogram.counts[index] = count
        if sum(histogram.counts) != state.count:
            raise ValueError("histogram bucket counts do not add up to its count")
        histogram.count = state.count
        histogram.min = state.min
        histogram.max = state.max
        return histogram


class HistogramState(msgspec.Struct, frozen=True, array_like=True):
    """A :class:`LatencyHistogram` as plain data: its non-empty ``(index, count)`` buckets."""

    buckets: list[tuple[int, int]]
    count: int
    min: float
    max: float


# --- per-provider metrics --------------------------------------------------------------------


class ProviderMetricsState(msgspec.Struct, frozen=True, array_like=True):
    """One provider's fold state as plain data (the fields of ``_ProviderState``)."""

    requests: int
    successes: int
    failures: int
    cancelled: int
    latency_sum: float
    histogram: HistogramState
    input_tokens: int
    output_tokens: int
    cost: float
    unpriced: int
    last_used: float | None


class MetricsState(msgspec.Struct, frozen=True):
    """A :class:`MetricsProjection`'s state as plain data, in fold (insertion) order."""

    providers: dict[str, ProviderMetricsState]


class _ProviderState:
    __slots__ = (
        "cancelled",
        "cost",
        "failures",
        "histogram",
        "input_tokens",
        "last_used",
        "latency_sum",
        "output_tokens",
        "requests",
        "successes",
        "unpriced",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.cancelled = 0
        self.latency_sum = 0.0
        self.histogram = LatencyHistogram()
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.unpriced = 0
        self.last_used: float | None = None


class MetricsProjection(Mapping[str, ProviderMetrics]):
    """Fold attempt events into per-provider figures.

    ``requests`` counts attempts (successful, failed, and streams the caller cancelled, which
    are not failures of the provider); latency figures and tokens come from
    successful attempts; ``cost`` sums the known costs and ``unpriced_requests`` counts the
    successes whose cost is unknown; ``last_used`` is the latest attempt's ``ts``.

    The projection is also a read-only mapping of provider name to :class:`ProviderMetrics`, so
    ``replay(db).metrics == runtime.get_metrics()`` compares figures directly.
    """

    def __init__(self) -> None:
        self._providers: dict[str, _ProviderState] = {}
        self.handlers: dict[type[Event], Handler] = {
            AttemptSucceeded: self._on_succeeded,
            AttemptFailed: self._on_failed,
        }

    def apply(self, position: int, event: Event) -> None:
        """Fold one event; events other than attempt outcomes are ignored."""
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _state(self, provider: str) -> _ProviderState:
        state = self._providers.get(provider)
        if state is None:
            state = self._providers[provider] = _ProviderState()
        return state

    def _on_succeeded(self, event: AttemptSucceeded) -> None:
        state = self._state(event.provider)
        state.requests += 1
        state.successes += 1
        latency = _latency(event.latency_ms)
        state.latency_sum += latency
        state.histogram.record(latency)
        state.input_tokens += event.input_tokens
        state.output_tokens += event.output_tokens
        cost = _cost(event.cost)
        if cost is None:
            state.unpriced += 1
        else:
            state.cost += cost
        if state.last_used is None or event.ts > state.last_used:
            state.last_used = event.ts

    def _on_failed(self, event: AttemptFailed) -> None:
        state = self._state(event.provider)
        state.requests += 1
        # A stream the caller closed early, or an attempt we stopped, is not the provider's
        # failure.
        if event.error in CANCELLATIONS:
            state.cancelled += 1
        else:
            state.failures += 1
        if state.last_used is None or event.ts > state.last_used:
            state.last_used = event.ts

    def state(self) -> MetricsState:
        """Return the fold state as plain data: what a snapshot needs to continue the fold."""
        return MetricsState(
            providers={
                name: ProviderMetricsState(
                    requests=s.requests,
                    successes=s.successes,
                    failures=s.failures,
                    cancelled=s.cancelled,
                    latency_sum=s.latency_sum,
                    histogram=s.histogram.state(),
                    input_tokens=s.input_tokens,
                    output_tokens=s.output_tokens,
                    cost=s.cost,
                    unpriced=s.unpriced,
                    last_used=s.last_used,
                )
                for name, s in self._providers.items()
            }
        )

    def load_state(self, state: MetricsState) -> None:
        """Replace the fold state with ``state`` (as :meth:`state` returned it).

        Raises:
            ValueError: a histogram in ``state`` is not sound.
        """
        providers: dict[str, _ProviderState] = {}
        for name, saved in state.providers.items():
            s = providers[name] = _ProviderState()
            s.requests = saved.requests
            s.successes = saved.successes
            s.failures = saved.failures
            s.cancelled = saved.cancelled
            s.latency_sum = saved.latency_sum
            s.histogram = LatencyHistogram.from_state(saved.histogram)
            s.input_tokens = saved.input_tokens
            s.output_tokens = saved.output_tokens
            s.cost = saved.cost
            s.unpriced = saved.unpriced
            s.last_used = saved.last_used
        self._providers = providers

    def get_metrics(self, provider: str) -> ProviderMetrics:
        """Return the figures of ``provider`` (all zero if it was never attempted)."""
        state = self._providers.get(provider)
        if state is None:
            return ProviderMetrics(provider=provider)
        p50, p95, p99 = state.histogram.quantiles(_QUANTILES_BP)
        return ProviderMetrics(
            provider=provider,
            requests=state.requests,
            successes=state.successes,
            failures=state.failures,
            cancelled=state.cancelled,
            error_rate=state.failures / state.requests if state.requests else 0.0,
            latency_mean_ms=state.latency_sum / state.successes if state.successes else 0.0,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            cost=state.cost,
            unpriced_requests=state.unpriced,
            last_used=state.last_used,
        )

    def snapshot(self) -> dict[str, ProviderMetrics]:
        """Return every provider's figures, sorted by provider name."""
        return {name: self.get_metrics(name) for name in sorted(self._providers)}

    def histogram(self, provider: str) -> LatencyHistogram | None:
        """Return the latency histogram of ``provider`` (read it, do not change it)."""
        state = self._providers.get(provider)
        return None if state is None else state.histogram

    def __getitem__(self, provider: str) -> ProviderMetrics:
        if provider not in self._providers:
            raise KeyError(provider)
        return self.get_metrics(provider)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._providers))

    def __len__(self) -> int:
        return len(self._providers)

    def __repr__(self) -> str:
        return f"MetricsProjection({self.snapshot()!r})"
