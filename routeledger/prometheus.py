"""Prometheus metrics of a runtime, or of a log file, read at scrape time.

Needs the ``prometheus`` extra (``pip install 'routeledger[prometheus]'``); ``import
routeledger`` never imports this module nor ``prometheus_client``. Register once::

    collector = rt.prometheus_collector()          # or routeledger.prometheus.register(rt)
    prometheus_client.start_http_server(9464)      # or the daemon's own /metrics endpoint

:class:`RuntimeCollector` is a custom collector: it keeps no metric objects and is not
updated by requests. Each scrape reads the runtime's own figures (the projections that
``get_metrics()`` reports, the runtime's gauges) and turns them into metric families, so a
runtime that is never scraped pays nothing. ``routeledger metrics --db FILE --port N`` serves
the same families from a log file (:class:`LogCollector`).

Families (counters get the ``_total`` suffix; durations are in seconds):

======================================== =============================== ===================
name                                     labels                          from
======================================== =============================== ===================
routeledger_requests_total               provider, model, outcome        request outcomes
routeledger_request_errors_total         provider, model, error          failed, rejected
routeledger_attempts_total               provider, model, outcome        attempts
routeledger_attempt_errors_total         provider, model, error          failed attempts
routeledger_retries_total                provider, model                 attempts after 1st
routeledger_fallback_successes_total     provider                        fallback.succeeded
routeledger_fallback_exhaustions_total   error                           fallback.exhausted
routeledger_tokens_total                 provider, model, type           successful attempts
routeledger_cost_total                   provider, model                 successful attempts
routeledger_unpriced_attempts_total      provider, model                 unknown cost
routeledger_attempt_duration_seconds     provider (histogram)            successful attempts
routeledger_time_to_first_token_seconds  provider (histogram)            successful streams
routeledger_in_flight_requests           provider                        live only
routeledger_concurrency_limit            provider
routeledger_circuit_state                provider, state (1 = current)
routeledger_log_position                                                 last folded position
routeledger_log_events_dropped_total                                     gaps in the log
routeledger_log_pending_events                                           live only
routeledger_log_store_failing                                            live only
======================================== =============================== ===================

Summed over ``model``, the attempt counters, tokens and cost equal ``get_metrics()``: the
``outcome`` values ``success``, ``failure`` and ``cancelled`` are its ``successes``,
``failures`` and ``cancelled``. Request outcomes are ``success``, ``cached``, ``error`` and
``rejected`` (the last has empty provider and model: it was never routed). Token ``type``
values are the labels of :data:`routeledger._export.TOKEN_FIELDS`. ``routeledger_cost_total``
is in the currency of the configured prices (per million tokens).

Histogram buckets: the projections hold a log-linear histogram of 1,857 buckets (64 per power
of two, each under 0.8 % wide), too many to expose. Standard Prometheus bounds cannot all be
bucket edges of it (25 ms, for one, falls inside a bucket), so an exact mapping is impossible.
Each bucket is counted wholly under the first bound at or above its midpoint: the value the
projections already report its samples as (their quantiles are midpoints too). A sample
within 0.8 % of a bound may therefore be counted on the wrong side of it; counts, sums and
everything away from the bounds are exact. ``_sum`` is the exact sum of the samples.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from routeledger._export import CIRCUIT_STATES, Figures, LogFigures, RuntimeFigures
from routeledger.events import RouteledgerError

# The histogram's layout belongs to the projections; it is read here, never copied.
from routeledger.events._metrics import _BUCKETS, _bucket_mid

if TYPE_CHECKING:
    import os

    from routeledger._runtime import Runtime

__all__ = [
    "DEFAULT_BUCKETS_S",
    "LogCollector",
    "RuntimeCollector",
    "families",
    "register",
]

log = logging.getLogger("routeledger")

DEFAULT_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Upper bounds (seconds) of the exported histograms' buckets, before ``+Inf``."""


class _BucketMap:
    """Which exported bucket each of the projection's histogram buckets falls in."""

    def __init__(self, bounds_s: Sequence[float]) -> None:
        bounds = sorted(float(b) for b in bounds_s)
        if not bounds or any(b <= 0 for b in bounds):
            raise ValueError("histogram bounds must be positive seconds")
        self.bounds = bounds
        self.labels = [_le(b) for b in bounds] + ["+Inf"]
        # bisect_left: a midpoint equal to a bound is at or below it (Prometheus' `le`).
        self.index = [bisect.bisect_left(bounds, _bucket_mid(i) / 1000.0) for i in range(_BUCKETS)]

    def cumulative(self, counts: Sequence[int]) -> list[tuple[str, float]]:
        per = [0] * (len(self.bounds) + 1)
        index = self.index
        for i, count in enumerate(counts):
            if count:
                per[index[i]] += count
        out: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(self.labels, per, strict=True):
            running += count
            out.append((label, float(running)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


def families(figures: Figures, buckets: _BucketMap) -> Iterator[Metric]:
    """Yield the metric families of ``figures`` (see the module docstring for the list)."""
    fold = figures.fold
    pm = ("provider", "model")

    def counter(
        name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[tuple[str, ...], float]]
    ) -> Metric:
        family = CounterMetricFamily(name, doc, labels=list(labels))
        for key, value in sorted(values):
            family.add_metric([str(k) for k in key], float(value))
        return family

    yield counter(
        "routeledger_requests",
        "Requests by final outcome (success, cached, error, rejected).",
        (*pm, "outcome"),
        fold.requests.items(),
    )
    yield counter(
        "routeledger_request_errors",
        "Failed or rejected requests by the error class the caller saw.",
        (*pm, "error"),
        fold.request_errors.items(),
    )
    yield counter(
        "routeledger_attempts",
        "Attempts sent to providers by outcome (success, failure, cancelled).",
        (*pm, "outcome"),
        fold.attempts.items(),
    )
    yield counter(
        "routeledger_attempt_errors",
        "Failed attempts by error class.",
        (*pm, "error"),
        fold.attempt_errors.items(),
    )
    yield counter(
        "routeledger_retries",
        "Attempts after a request's first (same or another provider).",
        pm,
        fold.retries.items(),
    )
    yield counter(
        "routeledger_fallback_successes",
        "Requests that succeeded on this provider after an earlier attempt failed.",
        ("provider",),
        (((p,), n) for p, n in fold.fallback_successes.items()),
    )
    yield counter(
        "routeledger_fallback_exhaustions",
        "Requests whose every allowed attempt failed, by the last error.",
        ("error",),
        (((e,), n) for e, n in fold.fallback_exhaustions.items()),
    )
    yield counter(
        "routeledger_tokens",
        "Tokens of successful attempts by type (input, output, ...).",
        (*pm, "type"),
        fold.tokens.items(),
    )
    yield counter(
        "routeledger_cost",
        "Known cost of successful attempts, in the currency of the configured prices.",
        pm,
        fold.cost.items(),
    )
    yield counter(
        "routeledger_unpriced_attempts",
        "Successful attempts whose cost is unknown (unpriced models).",
        pm,
        fold.unpriced.items(),
    )

    duration = HistogramMetricFamily(
        "routeledger_attempt_duration_seconds",
        "Latency of successful attempts (buckets mapped from the projections' histogram).",
        labels=["provider"],
    )
    for provider in sorted(figures.latency_buckets):
        duration.add_metric(
            [provider],
            buckets.cumulative(figures.latency_buckets[provider]),
            fold.latency_sum_ms.get(provider, 0.0) / 1000.0,
        )
    yield duration
    ttft = HistogramMetricFamily(
        "routeledger_time_to_first_token_seconds",
        "Time to the first chunk of successful streamed attempts.",
        labels=["provider"],
    )
    for provider in sorted(fold.ttft):
        ttft.add_metric(
            [provider],
            buckets.cumulative(fold.ttft[provider].counts),
            fold.ttft_sum_ms.get(provider, 0.0) / 1000.0,
        )
    yield ttft

    if figures.in_flight is not None:
        yield _gauge(
            "routeledger_in_flight_requests",
            "Requests in flight (slots reserved) per provider.",
            figures.in_flight,
        )
    yield _gauge(
        "routeledger_concurrency_limit",
        "Concurrency budget per provider.",
        figures.limits,
    )
    circuit = GaugeMetricFamily(
        "routeledger_circuit_state",
        "Circuit state per provider: 1 for the current state, 0 for the others.",
        labels=["provider", "state"],
    )
    for provider in sorted(figures.circuits):
        current = figures.circuits[provider]
        for state in CIRCUIT_STATES:
            circuit.add_metric([provider, state], 1.0 if state == current else 0.0)
    yield circuit

    yield GaugeMetricFamily(
        "routeledger_log_position",
        "Position of the last event of the log the figures include.",
        value=float(figures.position),
    )
    yield CounterMetricFamily(
        "routeledger_log_events_dropped",
        "Events lost in explicit gaps of the log (the store failed too long).",
        value=float(fold.dropped_events),
    )
    if figures.pending_events is not None:
        yield GaugeMetricFamily(
            "routeledger_log_pending_events",
            "Events buffered by the log writer, not yet stored.",
            value=float(figures.pending_events),
        )
    if figures.store_failing is not None:
        yield GaugeMetricFamily(
            "routeledger_log_store_failing",
            "1 while the event log's store is failing (events are buffered).",
            value=1.0 if figures.store_failing else 0.0,
        )


def _gauge(name: str, doc: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["provider"])
    for provider in sorted(values):
        family.add_metric([provider], float(values[provider]))
    return family


class _FiguresCollector(Collector):
    """Turns a source's :class:`Figures` into metric families at each scrape."""

    def __init__(
        self, source: RuntimeFigures | LogFigures, *, buckets: Sequence[float] = DEFAULT_BUCKETS_S
    ) -> None:
        self.source = source
        self._buckets = _BucketMap(buckets)

    def collect(self) -> Iterable[Metric]:
        """Read the figures now and return their families."""
        return list(families(self.source.figures(), self._buckets))

    def describe(self) -> Iterable[Metric]:
        """Return the families' names (no values), so a second registration is refused."""
        names = [
            ("routeledger_requests", "counter"),
            ("routeledger_attempt_duration_seconds", "histogram"),
            ("routeledger_log_position", "gauge"),
        ]
        return [Metric(name, "", kind) for name, kind in names]


class RuntimeCollector(_FiguresCollector):
    """A collector over a live runtime; a closed runtime reports nothing."""

    def __init__(self, runtime: Runtime, *, buckets: Sequence[float] = DEFAULT_BUCKETS_S) -> None:
        super().__init__(RuntimeFigures(runtime), buckets=buckets)

    def collect(self) -> Iterable[Metric]:
        """Read the runtime's figures now and return their families."""
        try:
            return super().collect()
        except RouteledgerError as exc:
            log.warning("prometheus: runtime figures unavailable: %s", exc)
            return []


class LogCollector(_FiguresCollector):
    """A collector over an event log file, following its appends (one read per scrape)."""

    def __init__(
        self, path: str | os.PathLike[str], *, buckets: Sequence[float] = DEFAULT_BUCKETS_S
    ) -> None:
        super().__init__(LogFigures(path), buckets=buckets)

    def close(self) -> None:
        """Close the log file."""
        assert isinstance(self.source, LogFigures)
        self.source.close()


def register(
    runtime: Runtime,
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS_S,
) -> RuntimeCollector:
    """Register a :class:`RuntimeCollector` of ``runtime`` and return it.

    Args:
        runtime: the runtime to report.
        registry: where to register (default: ``prometheus_client``'s global registry).
        buckets: the histograms' upper bounds in seconds.

    Raises:
        ValueError: the registry already holds a routeledger collector (one per registry:
            their series would collide).
    """
    collector = RuntimeCollector(runtime, buckets=buckets)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
