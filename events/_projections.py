"""Projections: metrics, usage and A/B results as pure folds over events. No I/O.

The same fold runs live (fed by the log writer after each commit) and in replay from the
file, so a live projection and one replayed from the log hold exactly the same figures. To keep
that true to the last bit, every fold is deterministic: state changes depend only on the events
and their order, floats are always combined in the same order, and reports are computed from
the state in a fixed (sorted) order. No fold reads the clock or a random source.

Each projection dispatches on ``type(event)`` through a dict of bound methods, because replay
must fold hundreds of thousands of events a second and an ``isinstance`` chain is too slow.
Events a projection does not care about cost one dict lookup.

Non-finite numbers never enter the state (JSON cannot store them, so a live fold that accepted
them would disagree with its replay): a latency that is negative or not finite counts as
``0.0``, a cost that is not finite counts as unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from routeledger.events._errors import RequestError
from routeledger.events._events import (
    ABMetricsRecorded,
    ABTestCreated,
    AttemptFailed,
    AttemptSucceeded,
    ConfigurationApplied,
    Event,
    RequestCompleted,
    RequestFailed,
)
from routeledger.events._routing import RoutingProjection
from routeledger.events._types import ABVariantResult, ProviderMetrics, Usage, UsageReport

__all__ = [
    "AB_SEED_KEYS",
    "PERIODS",
    "ABProjection",
    "LatencyHistogram",
    "MetricsProjection",
    "Projection",
    "Projections",
    "ProjectionsSnapshot",
    "UsageProjection",
]

Handler = Callable[[Any], None]

PERIODS = ("hour", "day", "week", "month", "all")
"""Usage periods :meth:`UsageProjection.report` accepts; all are UTC calendar buckets."""


class Projection(Protocol):
    """Anything that folds events: the store's replay and the log writer feed it in order."""

    def apply(self, position: int, event: Event) -> None:
        """Fold one event, stored at ``position`` of the log, into the state."""


def _latency(value: float) -> float:
    # NaN fails both comparisons, so it lands on 0.0 too.
    return value if 0.0 <= value < math.inf else 0.0


def _cost(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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


# --- per-provider metrics --------------------------------------------------------------------


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
        # A stream the caller closed early is not the provider's failure.
        if event.error == "StreamCancelled":
            state.cancelled += 1
        else:
            state.failures += 1
        if state.last_used is None or event.ts > state.last_used:
            state.last_used = event.ts

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


# --- usage -----------------------------------------------------------------------------------


class _UsageBucket:
    __slots__ = ("by_model", "cost", "errors", "input_tokens", "output_tokens", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.by_model: dict[str, list[int]] = {}  # model -> [input_tokens, output_tokens]


_HOUR = 3600
_DAY = 86400


def _month_start(ts: float) -> datetime:
    when = datetime.fromtimestamp(ts, UTC)
    return datetime(when.year, when.month, 1, tzinfo=UTC)


def _period_bounds(period: str, hour: int) -> tuple[int, int]:
    """Return ``[start, end)`` in hour indices of the ``period`` bucket holding ``hour``."""
    if period == "hour":
        return hour, hour + 1
    day = hour // 24
    if period == "day":
        return day * 24, day * 24 + 24
    if period == "week":
        # 1970-01-01 (day 0) was a Thursday: (day + 3) % 7 is the ISO weekday, Monday = 0.
        monday = day - (day + 3) % 7
        return monday * 24, monday * 24 + 7 * 24
    start = _month_start(float(hour * _HOUR))
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()) // _HOUR, int(end.timestamp()) // _HOUR


class UsageProjection:
    """Fold request outcomes into usage per UTC calendar period.

    ``RequestCompleted`` counts a request with its tokens, its known cost and a per-model token
    breakdown; a cached answer (``cached=True``) counts as a request but consumed no tokens and
    cost nothing. ``RequestFailed`` counts a request and an error. State is kept in hourly
    buckets (bounded by the hours of history); days, ISO weeks (Monday start), months and
    ``all`` are sums of those buckets, taken in time order.

    Calling the projection is the same as :meth:`report`: ``replay(db).usage("day")``. A
    report is of the period holding the log's latest request outcome or runtime start
    (``config.applied``), so that a live runtime and a replay of its log name one period.
    """

    def __init__(self) -> None:
        self._hours: dict[int, _UsageBucket] = {}
        self._latest_ts: float | None = None
        self.handlers: dict[type[Event], Handler] = {
            RequestCompleted: self._on_completed,
            RequestFailed: self._on_failed,
            ConfigurationApplied: self._on_started,
        }

    def apply(self, position: int, event: Event) -> None:
        """Fold one event; events other than request outcomes are ignored."""
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _bucket(self, ts: float) -> _UsageBucket:
        if self._latest_ts is None or ts > self._latest_ts:
            self._latest_ts = ts
        hour = int(ts // _HOUR)
        bucket = self._hours.get(hour)
        if bucket is None:
            bucket = self._hours[hour] = _UsageBucket()
        return bucket

    def _on_completed(self, event: RequestCompleted) -> None:
        bucket = self._bucket(event.ts)
        bucket.requests += 1
        tokens = bucket.by_model.get(event.model)
        if tokens is None:
            tokens = bucket.by_model[event.model] = [0, 0]
        if event.cached:
            return
        bucket.input_tokens += event.input_tokens
        bucket.output_tokens += event.output_tokens
        tokens[0] += event.input_tokens
        tokens[1] += event.output_tokens
        cost = _cost(event.cost)
        if cost is not None:
            bucket.cost += cost

    def _on_failed(self, event: RequestFailed) -> None:
        bucket = self._bucket(event.ts)
        bucket.requests += 1
        bucket.errors += 1

    def _on_started(self, event: ConfigurationApplied) -> None:
        # A (re)started runtime reports the period it started in, not its log's last one.
        if self._latest_ts is None or event.ts > self._latest_ts:
            self._latest_ts = event.ts

    @property
    def latest_ts(self) -> float | None:
        """Return the latest ``ts`` of a request outcome or runtime start folded so far."""
        return self._latest_ts

    def report(self, period: str = "day", now: float | None = None) -> UsageReport:
        """Return usage over the ``period`` bucket containing ``now``.

        Args:
            period: ``hour``, ``day``, ``week`` (ISO, Monday start), ``month`` or ``all``.
            now: a Unix time; ``None`` means the bucket of the latest event seen.

        Raises:
            RequestError: ``period`` is not one of :data:`PERIODS`.
        """
        _check_period(period)
        hours = sorted(self._hours)
        if period == "all":
            return self._sum(period, None, hours)
        ref = self._latest_ts if now is None else now
        if ref is None:
            return UsageReport(period=period)
        start, end = _period_bounds(period, int(ref // _HOUR))
        return self._sum(period, float(start * _HOUR), [h for h in hours if start <= h < end])

    __call__ = report

    def reports(self, period: str = "day") -> list[UsageReport]:
        """Return one report per non-empty ``period`` bucket, in time order.

        Raises:
            RequestError: ``period`` is not one of :data:`PERIODS`.
        """
        _check_period(period)
        hours = sorted(self._hours)
        if period == "all":
            return [self._sum(period, None, hours)]
        groups: dict[int, list[int]] = {}
        end = start = 0
        for hour in hours:
            if not start <= hour < end:
                start, end = _period_bounds(period, hour)
                groups[start] = []
            groups[start].append(hour)
        return [self._sum(period, float(s * _HOUR), members) for s, members in groups.items()]

    def _sum(self, period: str, start: float | None, hours: list[int]) -> UsageReport:
        requests = errors = input_tokens = output_tokens = 0
        cost = 0.0
        by_model: dict[str, list[int]] = {}
        for hour in hours:
            bucket = self._hours[hour]
            requests += bucket.requests
            errors += bucket.errors
            input_tokens += bucket.input_tokens
            output_tokens += bucket.output_tokens
            cost += bucket.cost
            for model, (tokens_in, tokens_out) in bucket.by_model.items():
                total = by_model.setdefault(model, [0, 0])
                total[0] += tokens_in
                total[1] += tokens_out
        return UsageReport(
            period=period,
            start=start,
            requests=requests,
            errors=errors,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            by_model={
                model: Usage(input_tokens=by_model[model][0], output_tokens=by_model[model][1])
                for model in sorted(by_model)
            },
        )


def _check_period(period: str) -> None:
    if period not in PERIODS:
        raise RequestError(f"unknown usage period {period!r}; expected one of {', '.join(PERIODS)}")


# --- A/B tests -------------------------------------------------------------------------------

AB_SEED_KEYS: dict[str, tuple[str, ...]] = {
    "requests": ("requests",),
    "errors": ("errors",),
    "error_rate": ("error_rate", "errorRate"),
    "latency": ("mean_latency_ms", "avg_latency_ms", "avg_latency", "avgLatency", "latency_ms"),
    "cost": ("mean_cost", "avg_cost", "avgCost", "cost"),
}
"""Keys accepted in the seed ``metrics`` of :class:`ABTestCreated`, per figure, in order of
preference. Variants are keyed ``"A"``/``"B"`` (``"variantA"``/``"variantB"`` also work).

A seed stands for ``requests`` outcomes recorded before the test was set up: they count as
that many requests with the given mean latency, ``errors`` (or ``round(error_rate *
requests)``) errors and, when a cost key is present, that many known costs with the given mean.
A seed without a positive ``requests`` cannot be weighed and is ignored."""

_VARIANT_ALIASES = {"A": "A", "B": "B", "variantA": "A", "variantB": "B"}


def _seed_value(seed: Mapping[str, float], figure: str) -> float | None:
    for key in AB_SEED_KEYS[figure]:
        value = seed.get(key)
        if value is not None and math.isfinite(value):
            return float(value)
    return None


class _VariantState:
    __slots__ = ("cost_count", "cost_sum", "errors", "latency_sum", "provider", "requests")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.requests = 0
        self.errors = 0
        self.latency_sum = 0.0
        self.cost_sum = 0.0
        self.cost_count = 0

    def result(self, variant: str) -> ABVariantResult:
        return ABVariantResult(
            variant=variant,
            provider=self.provider,
            requests=self.requests,
            errors=self.errors,
            mean_latency_ms=self.latency_sum / self.requests if self.requests else 0.0,
            mean_cost=self.cost_sum / self.cost_count if self.cost_count else 0.0,
            error_rate=self.errors / self.requests if self.requests else 0.0,
        )


class ABProjection:
    """Fold A/B test events into per-variant outcomes.

    ``ABTestCreated`` defines a test and folds in its seed metrics (see :data:`AB_SEED_KEYS`).
    Creating a test again with the same definition (as a restarted runtime does) keeps its
    figures; a different definition starts the test afresh. ``ABMetricsRecorded`` counts one
    outcome: its latency, its cost when known (``None`` is left out of the cost mean) and
    whether it was an error. Outcomes for a test never created are kept under an unknown
    (empty) provider rather than dropped.
    """

    def __init__(self) -> None:
        self._tests: dict[str, dict[str, _VariantState]] = {}
        self._definitions: dict[str, ABTestCreated] = {}
        self.handlers: dict[type[Event], Handler] = {
            ABTestCreated: self._on_created,
            ABMetricsRecorded: self._on_recorded,
        }

    def apply(self, position: int, event: Event) -> None:
        """Fold one event; events other than A/B definitions and outcomes are ignored."""
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_created(self, event: ABTestCreated) -> None:
        previous = self._definitions.get(event.name)
        # ts differs between runs of the same configuration; the definition is the rest.
        if previous is not None and msgspec.structs.replace(previous, ts=event.ts) == event:
            return
        self._definitions[event.name] = event
        variants = {"A": _VariantState(event.variant_a), "B": _VariantState(event.variant_b)}
        self._tests[event.name] = variants
        for key, seed in event.metrics.items():
            variant = variants.get(_VARIANT_ALIASES.get(key, ""))
            requests = _seed_value(seed, "requests")
            if variant is None or requests is None or requests < 1:
                continue
            n = int(requests)
            errors = _seed_value(seed, "errors")
            if errors is None:
                rate = _seed_value(seed, "error_rate") or 0.0
                errors = float(round(rate * n))
            variant.requests += n
            variant.errors += min(max(int(errors), 0), n)
            latency = _seed_value(seed, "latency")
            if latency is not None:
                variant.latency_sum += _latency(latency) * n
            cost = _seed_value(seed, "cost")
            if cost is not None:
                variant.cost_sum += cost * n
                variant.cost_count += n

    def _on_recorded(self, event: ABMetricsRecorded) -> None:
        variants = self._tests.get(event.test)
        if variants is None:
            variants = self._tests[event.test] = {}
        state = variants.get(event.variant)
        if state is None:
            state = variants[event.variant] = _VariantState("")
        state.requests += 1
        if event.error:
            state.errors += 1
        state.latency_sum += _latency(event.latency_ms)
        cost = _cost(event.cost)
        if cost is not None:
            state.cost_sum += cost
            state.cost_count += 1

    def results(self, test: str) -> dict[str, ABVariantResult]:
        """Return the outcomes of each variant of ``test`` (``"A"`` and ``"B"``).

        Raises:
            RequestError: no such test was created or recorded.
        """
        variants = self._tests.get(test)
        if variants is None:
            raise RequestError(f"unknown A/B test {test!r}")
        return {name: variants[name].result(name) for name in sorted(variants)}

    def all_results(self) -> dict[str, dict[str, ABVariantResult]]:
        """Return the outcomes of every test, sorted by test name."""
        return {test: self.results(test) for test in sorted(self._tests)}

    def tests(self) -> list[str]:
        """Return the names of the tests seen, sorted."""
        return sorted(self._tests)


# --- the composite ---------------------------------------------------------------------------


class ProjectionsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the projections report, as plain comparable values.

    ``usage_hours`` holds every hourly bucket (the state every other period is summed from).
    """

    position: int
    events: int
    metrics: dict[str, ProviderMetrics]
    usage_hours: list[UsageReport]
    usage_all: UsageReport
    ab: dict[str, dict[str, ABVariantResult]]


class Projections:
    """Metrics, usage and A/B results folded together from one stream of events.

    Attributes:
        metrics: per-provider figures (also a mapping of provider to :class:`ProviderMetrics`).
        usage: usage per period (callable: ``usage("day")``).
        ab: A/B test outcomes.
        routing: the routing state a restarted runtime continues from (not part of
            :meth:`snapshot`: it is what routing reads, not a reported figure).
        position: the position of the last event applied (0 before any).
        events: how many events were applied.
        skipped_unknown: events of unknown types a non-strict replay skipped (set by the
            reader; never part of :meth:`snapshot`, since a live fold skips nothing).
    """

    def __init__(self) -> None:
        self.metrics = MetricsProjection()
        self.usage = UsageProjection()
        self.ab = ABProjection()
        self.routing = RoutingProjection()
        self.position = 0
        self.events = 0
        self.skipped_unknown = 0
        # One flat table: an event costs one lookup here, not one per projection.
        dispatch: dict[type[Event], Handler] = {}
        parts: tuple[Any, ...] = (self.metrics, self.usage, self.ab, self.routing)
        for part in parts:
            for event_type, handler in part.handlers.items():
                if event_type in dispatch:
                    dispatch[event_type] = _both(dispatch[event_type], handler)
                else:
                    dispatch[event_type] = handler
        self._dispatch = dispatch

    def apply(self, position: int, event: Event) -> None:
        """Fold one event stored at ``position`` into every projection."""
        self.position = position
        self.events += 1
        handler = self._dispatch.get(type(event))
        if handler is not None:
            handler(event)

    @property
    def ab_results(self) -> dict[str, dict[str, ABVariantResult]]:
        """Return the outcomes of every A/B test (the same as ``ab.all_results()``)."""
        return self.ab.all_results()

    def snapshot(self) -> ProjectionsSnapshot:
        """Return everything the projections hold, for comparison or encoding."""
        return ProjectionsSnapshot(
            position=self.position,
            events=self.events,
            metrics=self.metrics.snapshot(),
            usage_hours=self.usage.reports("hour"),
            usage_all=self.usage.report("all"),
            ab=self.ab.all_results(),
        )

    def __repr__(self) -> str:
        return f"Projections(position={self.position}, events={self.events})"


def _both(first: Handler, second: Handler) -> Handler:
    def handle(event: Any) -> None:
        first(event)
        second(event)

    return handle
