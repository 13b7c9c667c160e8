"""The usage fold: requests, tokens and cost per UTC calendar period."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from routeledger.events._errors import RequestError
from routeledger.events._events import (
    ConfigurationApplied,
    Event,
    RequestCompleted,
    RequestFailed,
)
from routeledger.events._fold import Handler, _cost
from routeledger.events._types import Usage, UsageReport

__all__ = ["PERIODS", "UsageProjection", "UsageState"]

PERIODS = ("hour", "day", "week", "month", "all")
"""Usage periods :meth:`UsageProjection.report` accepts; all are UTC calendar buckets."""


# --- usage -----------------------------------------------------------------------------------


class _UsageBucket:
    __slots__ = ("by_model", "cost", "errors", "input_tokens", "output_tokens", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        # model -> [input, output, cached input, cache write, reasoning] tokens; the bucket's
        # totals of the last three are the sums over its models.
        self.by_model: dict[str, list[int]] = {}


_HOUR = 3600
_DAY = 86400


class UsageBucketState(msgspec.Struct, frozen=True, array_like=True):
    """One hourly bucket as plain data; ``by_model`` maps a model to its (input, output).

    ``by_model_cache`` maps a model to its (cached input, cache write, reasoning) tokens, for
    the models that had any; a snapshot written before those counts existed has none.
    """

    hour: int
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float
    by_model: dict[str, tuple[int, int]]
    by_model_cache: dict[str, tuple[int, int, int]] = {}


class UsageState(msgspec.Struct, frozen=True):
    """A :class:`UsageProjection`'s state as plain data, buckets in fold (insertion) order."""

    hours: list[UsageBucketState]
    latest_ts: float | None


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
            tokens = bucket.by_model[event.model] = [0, 0, 0, 0, 0]
        if event.cached:
            return
        bucket.input_tokens += event.input_tokens
        bucket.output_tokens += event.output_tokens
        tokens[0] += event.input_tokens
        tokens[1] += event.output_tokens
        tokens[2] += event.cached_input_tokens
        tokens[3] += event.cache_write_tokens
        tokens[4] += event.reasoning_tokens
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

    def state(self) -> UsageState:
        """Return the fold state as plain data: what a snapshot needs to continue the fold."""
        return UsageState(
            hours=[
                UsageBucketState(
                    hour=hour,
                    requests=b.requests,
                    errors=b.errors,
                    input_tokens=b.input_tokens,
                    output_tokens=b.output_tokens,
                    cost=b.cost,
                    by_model={m: (t[0], t[1]) for m, t in b.by_model.items()},
                    by_model_cache={
                        m: (t[2], t[3], t[4]) for m, t in b.by_model.items() if any(t[2:])
                    },
                )
                for hour, b in self._hours.items()
            ],
            latest_ts=self._latest_ts,
        )

    def load_state(self, state: UsageState) -> None:
        """Replace the fold state with ``state`` (as :meth:`state` returned it)."""
        hours: dict[int, _UsageBucket] = {}
        for saved in state.hours:
            b = hours[saved.hour] = _UsageBucket()
            b.requests = saved.requests
            b.errors = saved.errors
            b.input_tokens = saved.input_tokens
            b.output_tokens = saved.output_tokens
            b.cost = saved.cost
            b.by_model = {
                m: [t[0], t[1], *saved.by_model_cache.get(m, (0, 0, 0))]
                for m, t in saved.by_model.items()
            }
        self._hours = hours
        self._latest_ts = state.latest_ts

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
            for model, tokens in bucket.by_model.items():
                total = by_model.setdefault(model, [0, 0, 0, 0, 0])
                for i, n in enumerate(tokens):
                    total[i] += n
        cache = [sum(t[i] for t in by_model.values()) for i in (2, 3, 4)]
        return UsageReport(
            period=period,
            start=start,
            requests=requests,
            errors=errors,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
            cached_input_tokens=cache[0],
            cache_write_tokens=cache[1],
            reasoning_tokens=cache[2],
            by_model={
                model: Usage(
                    input_tokens=t[0],
                    output_tokens=t[1],
                    cached_input_tokens=t[2],
                    cache_write_tokens=t[3],
                    reasoning_tokens=t[4],
                )
                for model in sorted(by_model)
                if (t := by_model[model])
            },
        )


def _check_period(period: str) -> None:
    if period not in PERIODS:
        raise RequestError(f"unknown usage period {period!r}; expected one of {', '.join(PERIODS)}")
