"""Read a recorded window of an event log as a trace: provider behaviour over time, arrivals.

A trace is what the simulation needs to replay the past under other settings:

- each provider's behaviour over time, in buckets of ``bucket_s`` seconds: the latency of its
  successes (median and log-normal spread), the share of its calls that failed with each
  status, their ``Retry-After`` values and how long failing took, the answers' output size;
  a bucket in which it got no call is reckoned from its health probes, else the last bucket
  before it carries on (a provider whose circuit was open keeps its failing behaviour until a
  call says otherwise);
- the arrival process: each ``request.received`` (time, model, prompt size, ``max_tokens``,
  stream, needed capabilities, deadline, preferred provider);
- the recorded figures (:class:`Figures`) that a what-if compares with.

Both reads stream the store: memory depends on the window's length in buckets and the
number of providers, never on the number of events. :func:`read_trace` is one pass;
:func:`read_arrivals` is a second one, consumed by the simulation as it goes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from routeledger._scenario import Arrival, Phase, PhaseError, SimBehaviour
from routeledger.events import (
    CANCELLATIONS,
    AttemptFailed,
    AttemptSucceeded,
    ConfigError,
    ConfigurationApplied,
    Event,
    HealthProbed,
    LatencyHistogram,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
)

if TYPE_CHECKING:
    from routeledger.store import EventStore

__all__ = [
    "FigureSet",
    "Figures",
    "ProviderTrace",
    "Trace",
    "Window",
    "parse_time",
    "read_arrivals",
    "read_trace",
    "status_of",
]

DEFAULT_BUCKET_S = 10.0

_LATE_S = 60.0
"""Events are appended about in time order, not exactly: reading stops this long after the
window's end."""


def parse_time(text: str, *, log_start: float) -> float:
    """Return the Unix time ``text`` names: ISO 8601, or seconds after the log's first event.

    ``"90"`` and ``"+90.5"`` are offsets from ``log_start``; ``"2026-12-03T14:05:00Z"`` (or
    with an offset; a time without a zone is UTC) is absolute.

    Raises:
        ConfigError: neither form.
    """
    value = text.strip()
    try:
        return log_start + float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            [f"{text!r} is neither an ISO 8601 time nor seconds after the log's start"]
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """The part of a log read: Unix times ``[start, end)`` (``None``: unbounded)."""

    start: float | None = None
    end: float | None = None

    def holds(self, ts: float) -> bool:
        """Return whether ``ts`` falls in the window."""
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)


def status_of(event: AttemptFailed) -> int:
    """Return the HTTP status a failed attempt stands for (0: could not connect).

    A timeout, which has no status, stands for a 504: the trace replays it as a failure that
    took as long as the recorded one.
    """
    if event.status is not None:
        return event.status
    if event.error == "ProviderConnectError":
        return 0
    if event.error == "RateLimited":
        return 429
    return 504 if event.error == "ProviderTimeout" else 502


class _Bucket:
    """What one provider did in one bucket of time."""

    __slots__ = (
        "fail_ms",
        "fails",
        "log_sq",
        "log_sum",
        "ok",
        "output",
        "probes_bad",
        "probes_ok",
        "retry_after",
        "seconds",
    )

    def __init__(self) -> None:
        self.ok = 0
        self.log_sum = 0.0
        self.log_sq = 0.0
        self.output = 0
        self.fails: dict[int, int] = {}
        self.retry_after: dict[int, tuple[float, int]] = {}
        self.fail_ms = 0.0
        self.probes_ok = 0
        self.probes_bad = 0
        self.seconds: dict[int, int] = {}
        """Calls admitted (not refused with 429) in each whole second: at most bucket_s."""

    @property
    def calls(self) -> int:
        return self.ok + sum(self.fails.values())


class ProviderTrace:
    """One provider's recorded behaviour, bucketed by the time each call started."""

    def __init__(self, name: str, bucket_s: float) -> None:
        self.name = name
        self.bucket_s = bucket_s
        self.buckets: dict[int, _Bucket] = {}
        self.calls = 0

    def _bucket(self, t: float) -> _Bucket:
        index = max(0, int(t // self.bucket_s))
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = _Bucket()
        return bucket

    def succeeded(self, t: float, latency_ms: float, output_tokens: int) -> None:
        """Count a success of a call started ``t`` seconds into the window."""
        b = self._bucket(t)
        log_ms = math.log(max(latency_ms, 0.01))
        b.ok += 1
        b.log_sum += log_ms
        b.log_sq += log_ms * log_ms
        b.output += output_tokens
        second = int(t)
        b.seconds[second] = b.seconds.get(second, 0) + 1
        self.calls += 1

    def failed(self, t: float, status: int, latency_ms: float, retry_after: float | None) -> None:
        """Count a failure with ``status`` of a call started ``t`` seconds into the window."""
        b = self._bucket(t)
        b.fails[status] = b.fails.get(status, 0) + 1
        b.fail_ms += latency_ms
        if retry_after is not None:
            total, n = b.retry_after.get(status, (0.0, 0))
            b.retry_after[status] = (total + retry_after, n + 1)
        if status != 429:
            second = int(t)
            b.seconds[second] = b.seconds.get(second, 0) + 1
        self.calls += 1

    def probed(self, t: float, healthy: bool) -> None:
        """Count an active health check at ``t``."""
        b = self._bucket(t)
        if healthy:
            b.probes_ok += 1
        else:
            b.probes_bad += 1

    def phases(self) -> list[Phase]:
        """Return the behaviour over time, one phase per bucket that says something new."""
        ok = sum(b.ok for b in self.buckets.values())
        log_sum = sum(b.log_sum for b in self.buckets.values())
        log_sq = sum(b.log_sq for b in self.buckets.values())
        # Buckets with too few successes to tell their spread take the provider's.
        overall_mu = log_sum / ok if ok else math.log(100.0)
        overall_sigma = _sd(log_sum, log_sq, ok)
        overall_output = round(sum(b.output for b in self.buckets.values()) / ok) if ok else 32
        # 429s are a rate limit, not a share of failures: under another strategy the load,
        # and with it the share refused, changes. The limit is the most calls the provider
        # admitted in one second of a bucket in which it also refused calls.
        limited = [b for b in self.buckets.values() if b.fails.get(429)]
        peaks = [max(b.seconds.values(), default=0) for b in limited]
        rate_limit = float(max(peaks)) if peaks and max(peaks) > 0 else None
        retry = [b.retry_after[429] for b in limited if 429 in b.retry_after]
        retry_after = (
            round(sum(t for t, _ in retry) / sum(n for _, n in retry), 3) if retry else 1.0
        )
        phases: list[Phase] = []
        healthy: Phase | None = None
        for index in sorted(self.buckets):
            b = self.buckets[index]
            start = 0.0 if not phases else index * self.bucket_s
            if b.calls == 0:
                if b.probes_bad and not b.probes_ok:
                    base = (healthy or phases[-1]) if phases else None
                    phase = Phase(
                        start_s=start,
                        latency_ms=base.latency_ms if base else math.exp(overall_mu),
                        latency_sigma=base.latency_sigma if base else overall_sigma,
                        errors=[PhaseError(status=503, rate=1.0)],
                    )
                elif b.probes_ok and phases and phases[-1].errors:
                    base = healthy or phases[-1]
                    phase = msgspec.structs.replace(base, start_s=start, errors=[])
                else:
                    continue
            else:
                fails = b.calls - b.ok
                refused = b.fails.get(429, 0) if rate_limit is not None else 0
                n = b.calls - refused
                phase = Phase(
                    start_s=start,
                    latency_ms=round(math.exp(b.log_sum / b.ok if b.ok else overall_mu), 3),
                    latency_sigma=round(
                        _sd(b.log_sum, b.log_sq, b.ok) if b.ok >= 3 else overall_sigma, 4
                    ),
                    fail_latency_ms=round(b.fail_ms / fails, 3) if fails else 20.0,
                    output_tokens=round(b.output / b.ok) if b.ok else overall_output,
                    errors=[
                        PhaseError(
                            status=status,
                            rate=count / n,
                            retry_after_s=_mean(b.retry_after.get(status)),
                        )
                        for status, count in sorted(b.fails.items())
                        if n and not (refused and status == 429)
                    ],
                )
            if rate_limit is not None:
                phase = msgspec.structs.replace(
                    phase, rate_limit_per_s=rate_limit, retry_after_s=retry_after
                )
            if not phase.errors:
                healthy = phase
            if phases and msgspec.structs.replace(phases[-1], start_s=start) == phase:
                continue  # nothing new: the phase before carries on
            phases.append(phase)
        return phases

    def behaviour(self) -> SimBehaviour:
        """Return the trace as a simulated provider's behaviour."""
        return SimBehaviour(phases=self.phases())


def _sd(total: float, squares: float, n: int) -> float:
    if n < 2:
        return 0.0
    variance = (squares - total * total / n) / (n - 1)
    return math.sqrt(max(variance, 0.0))


def _mean(pair: tuple[float, int] | None) -> float | None:
    return None if pair is None else round(pair[0] / pair[1], 3)


class FigureSet(msgspec.Struct, frozen=True, kw_only=True):
    """The figures of a run, recorded or simulated, side by side in a what-if."""

    requests: int
    completed: int
    failed: int
    success_rate: float
    attempts_per_request: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    cost: float
    share: dict[str, float]
    """Each provider's share of the completed requests."""
    errors: dict[str, int] = {}


class Figures:
    """Fold the outcomes of requests into :class:`FigureSet` (bounded memory)."""

    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.attempts = 0
        self.cost = 0.0
        self.latency = LatencyHistogram()
        self.served: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def apply(self, event: Event) -> None:
        """Count ``event`` if it ends a request."""
        if isinstance(event, RequestCompleted):
            self.completed += 1
            self.attempts += event.attempts
            self.cost += event.cost or 0.0
            if math.isfinite(event.latency_ms) and event.latency_ms >= 0:
                self.latency.record(event.latency_ms)
            self.served[event.provider] = self.served.get(event.provider, 0) + 1
        elif isinstance(event, RequestFailed):
            self.failed += 1
            self.attempts += event.attempts
            self.errors[event.error] = self.errors.get(event.error, 0) + 1

    def result(self) -> FigureSet:
        """Return the figures so far."""
        n = self.completed + self.failed
        p50, p95, p99 = self.latency.quantiles((5000, 9500, 9900))
        return FigureSet(
            requests=n,
            completed=self.completed,
            failed=self.failed,
            success_rate=round(self.completed / n, 6) if n else 0.0,
            attempts_per_request=round(self.attempts / n, 4) if n else 0.0,
            latency_p50_ms=round(p50, 3),
            latency_p95_ms=round(p95, 3),
            latency_p99_ms=round(p99, 3),
            cost=round(self.cost, 8),
            share={p: round(c / self.completed, 6) for p, c in sorted(self.served.items()) if c},
            errors=dict(sorted(self.errors.items())),
        )


class Trace:
    """What :func:`read_trace` found in a window of a log."""

    def __init__(self, *, bucket_s: float) -> None:
        self.bucket_s = bucket_s
        self.origin: float | None = None
        """Unix time of simulated second 0: the window's start (or the log's first event)."""
        self.last_ts = 0.0
        self.providers: dict[str, ProviderTrace] = {}
        self.figures = Figures()
        self.arrivals = 0
        self.summary: dict[str, Any] | None = None
        """The configuration the log recorded last (``config.applied``), without secrets."""
        self.configured: list[str] = []
        self.strategy = ""
        self.events = 0

    @property
    def duration_s(self) -> float:
        """Return how long the window ran, from its origin to its last event."""
        return 0.0 if self.origin is None else max(0.0, self.last_ts - self.origin)

    def provider(self, name: str) -> ProviderTrace:
        trace = self.providers.get(name)
        if trace is None:
            trace = self.providers[name] = ProviderTrace(name, self.bucket_s)
        return trace

    def behaviours(self) -> dict[str, SimBehaviour]:
        """Return every traced provider's recorded behaviour, by name."""
        return {n: t.behaviour() for n, t in sorted(self.providers.items()) if t.calls}

    def apply(self, event: Event) -> None:
        """Fold one event of the window."""
        assert self.origin is not None
        self.events += 1
        self.last_ts = max(self.last_ts, event.ts)
        t = event.ts - self.origin
        if isinstance(event, RequestReceived):
            self.arrivals += 1
        elif isinstance(event, AttemptSucceeded):
            self.provider(event.provider).succeeded(
                t - event.latency_ms / 1000.0, event.latency_ms, event.output_tokens
            )
        elif isinstance(event, AttemptFailed):
            if event.error in CANCELLATIONS or not event.counts_against_health:
                return
            self.provider(event.provider).failed(
                t - event.latency_ms / 1000.0,
                status_of(event),
                event.latency_ms,
                event.retry_after_s,
            )
        elif isinstance(event, HealthProbed):
            self.provider(event.provider).probed(t, event.healthy)
        else:
            self.figures.apply(event)


def _config_event(event: Event, trace: Trace) -> bool:
    if isinstance(event, ConfigurationApplied):
        if event.summary:
            trace.summary = event.summary
        trace.configured = list(event.providers)
        trace.strategy = event.strategy
        return True
    return False


def read_trace(
    store: EventStore, *, window: Window | None = None, bucket_s: float = DEFAULT_BUCKET_S
) -> Trace:
    """Read the behaviour of each provider and the recorded figures of ``window``, streaming.

    The configuration in force is the last ``config.applied`` before the window's end.
    """
    if not bucket_s > 0:
        raise ConfigError(["bucket_s must be > 0"])
    window = window or Window()
    trace = Trace(bucket_s=bucket_s)
    trace.origin = window.start
    for _, event in store.read(strict=False):
        if trace.origin is None:
            trace.origin = event.ts
        if window.end is not None and event.ts >= window.end + _LATE_S:
            break
        if _config_event(event, trace) or not window.holds(event.ts):
            continue
        trace.apply(event)
    return trace


def read_arrivals(
    store: EventStore, *, origin: float, window: Window | None = None
) -> Iterator[Arrival]:
    """Yield the window's recorded requests as arrivals, ``origin`` being simulated second 0."""
    window = window or Window()
    for _, event in store.read(strict=False):
        if window.end is not None and event.ts >= window.end + _LATE_S:
            return
        if isinstance(event, RequestReceived) and window.holds(event.ts):
            yield Arrival(
                at_s=round(max(0.0, event.ts - origin), 6),
                model=event.model,
                input_tokens=max(1, event.estimated_input_tokens),
                max_tokens=event.max_tokens,
                stream=event.stream,
                capabilities=[c for c in event.capabilities if c != "streaming"],
                deadline_s=event.deadline_s,
                preferred_provider=event.preferred_provider,
                session_id=event.session_id,
                metadata=dict(event.metadata) or None,
            )
