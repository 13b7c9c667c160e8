"""Figures for metric exporters, read at scrape time from a live runtime or from a log file.

The projections (``events/_projections.py``) keep what ``get_metrics()`` reports, per
provider. An exporter also wants counts by model and by error type, time to first token,
retries, failovers and the log's gaps. :class:`ExportFold` folds those from the same events.
It is not one of the live projections: it is fed when someone reads it, from the store,
starting where it stopped. So it costs nothing on the request path nor in the log writer's
fold, and nothing at all in a runtime that nobody scrapes.

Two sources hand out :class:`Figures`, both through :meth:`figures`:

- :class:`RuntimeFigures` reads a live runtime: one ``ask`` of the log writer copies the
  projections' figures and latency histograms at one position, the fold catches up to that
  same position from the store (on the caller's thread, not the writer's), and the gauges
  (in flight, concurrency limits, circuits) come from the runtime's public API.
- :class:`LogFigures` follows a log file: each call folds the events appended since the last
  one into fresh projections and the fold, so its figures equal ``replay(path)``. Gauges that
  live only in a process's memory (in flight, the writer's backlog) are absent; limits and
  circuit states are folded from the events that change them.

Nothing here imports an exporter library: ``routeledger.prometheus`` (and any later
exporter) turns :class:`Figures` into its own metric types.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any, NamedTuple

from routeledger.actors._writer import latency_buckets
from routeledger.events import (
    CANCELLATIONS,
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    ConcurrencyLimitChanged,
    ConfigurationApplied,
    Event,
    EventsDropped,
    FallbackExhausted,
    FallbackSucceeded,
    LatencyHistogram,
    Projections,
    ProviderDisabled,
    ProviderMetrics,
    RequestCompleted,
    RequestFailed,
    RequestRejected,
)

if TYPE_CHECKING:
    import os

    from routeledger._runtime import Runtime
    from routeledger.store import EventStore

__all__ = [
    "CIRCUIT_STATES",
    "TOKEN_FIELDS",
    "ExportFold",
    "Figures",
    "LogFigures",
    "RuntimeFigures",
]

TOKEN_FIELDS: tuple[tuple[str, str], ...] = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
)
"""``(label, AttemptSucceeded field)`` of each token count exported, in order.

A usage field the events gain later (cached input tokens, say) is one line here; a field an
older log's events lack counts as 0."""

CIRCUIT_STATES = ("closed", "open", "half_open", "disabled")
"""Every state a provider's circuit can report (``disabled``: taken out of service)."""


def _finite(value: float) -> float:
    # The projections' rule: a latency that is negative or not finite counts as 0.0.
    return value if 0.0 <= value < math.inf else 0.0


class ExportFold:
    """Fold the events that exporters break down further than the projections do.

    Keys are tuples of label values (``provider``, ``model``, then an outcome or an error
    class name); a request that failed before reaching a provider has provider ``""``.

    Attributes:
        position: the last position folded (0 before any).
        requests: request outcomes by (provider, model, outcome); outcome is ``success``,
            ``cached`` (served from the response cache), ``error`` or ``rejected``.
        request_errors: failed or rejected requests by (provider, model, error).
        attempts: attempts by (provider, model, outcome): ``success``, ``failure`` or
            ``cancelled`` (a stream the caller closed early), as the projections count them.
        attempt_errors: failed attempts by (provider, model, error).
        retries: attempts after a request's first, by (provider, model).
        tokens: tokens of successful attempts by (provider, model, type) (see
            :data:`TOKEN_FIELDS`).
        cost: known cost of successful attempts by (provider, model).
        unpriced: successful attempts of unknown cost by (provider, model).
        latency_sum_ms: summed latency of successful attempts by provider (in the
            projection's order, so it equals the projection's own sum exactly).
        ttft: time-to-first-token histograms of successful streams by provider.
        ttft_sum_ms: their sums.
        fallback_successes: requests that succeeded after a failed attempt, by provider.
        fallback_exhaustions: requests whose every attempt failed, by last error.
        dropped_events: events lost in gaps of the log (``log.events_dropped``).
        limits: concurrency limits by provider, from the configuration and its changes.
        circuits: circuit states by provider, from ``circuit.state_changed`` events.
    """

    def __init__(self) -> None:
        self.position = 0
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.request_errors: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.attempts: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.attempt_errors: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.retries: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.tokens: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.cost: defaultdict[tuple[str, str], float] = defaultdict(float)
        self.unpriced: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.latency_sum_ms: defaultdict[str, float] = defaultdict(float)
        self.ttft: dict[str, LatencyHistogram] = {}
        self.ttft_sum_ms: defaultdict[str, float] = defaultdict(float)
        self.fallback_successes: defaultdict[str, int] = defaultdict(int)
        self.fallback_exhaustions: defaultdict[str, int] = defaultdict(int)
        self.dropped_events = 0
        self.limits: dict[str, int] = {}
        self.circuits: dict[str, str] = {}
        self._handlers: dict[type[Event], Any] = {
            RequestCompleted: self._on_completed,
            RequestFailed: self._on_request_failed,
            RequestRejected: self._on_rejected,
            AttemptSucceeded: self._on_succeeded,
            AttemptFailed: self._on_attempt_failed,
            FallbackSucceeded: self._on_fallback_succeeded,
            FallbackExhausted: self._on_fallback_exhausted,
            EventsDropped: self._on_dropped,
            ConfigurationApplied: self._on_configuration,
            ConcurrencyLimitChanged: self._on_limit,
            CircuitStateChanged: self._on_circuit,
            ProviderDisabled: self._on_disabled,
        }

    def apply(self, position: int, event: Event) -> None:
        """Fold one event stored at ``position``."""
        self.position = position
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def catch_up(self, store: EventStore, up_to: int | None = None) -> None:
        """Fold the events of ``store`` after :attr:`position`, up to position ``up_to``."""
        limit = None if up_to is None else max(up_to - self.position, 0)
        if limit == 0:
            return
        for position, event in store.read(self.position + 1, limit=limit, strict=False):
            self.apply(position, event)

    def _on_completed(self, event: RequestCompleted) -> None:
        outcome = "cached" if event.cached else "success"
        self.requests[event.provider, event.model, outcome] += 1

    def _on_request_failed(self, event: RequestFailed) -> None:
        provider = event.provider or ""
        self.requests[provider, event.model, "error"] += 1
        self.request_errors[provider, event.model, event.error] += 1

    def _on_rejected(self, event: RequestRejected) -> None:
        # A rejected request names no model: it never got far enough to be routed.
        self.requests["", "", "rejected"] += 1
        self.request_errors["", "", event.error] += 1

    def _on_succeeded(self, event: AttemptSucceeded) -> None:
        provider, model = event.provider, event.model
        self.attempts[provider, model, "success"] += 1
        if event.attempt > 1:
            self.retries[provider, model] += 1
        for label, field in TOKEN_FIELDS:
            self.tokens[provider, model, label] += getattr(event, field, 0) or 0
        if event.cost is not None and math.isfinite(event.cost):
            self.cost[provider, model] += event.cost
        else:
            self.unpriced[provider, model] += 1
        self.latency_sum_ms[provider] += _finite(event.latency_ms)
        if event.ttft_ms is not None:
            ttft = _finite(event.ttft_ms)
            histogram = self.ttft.get(provider)
            if histogram is None:
                histogram = self.ttft[provider] = LatencyHistogram()
            histogram.record(ttft)
            self.ttft_sum_ms[provider] += ttft

    def _on_attempt_failed(self, event: AttemptFailed) -> None:
        provider, model = event.provider, event.model
        outcome = "cancelled" if event.error in CANCELLATIONS else "failure"
        self.attempts[provider, model, outcome] += 1
        self.attempt_errors[provider, model, event.error] += 1
        if event.attempt > 1:
            self.retries[provider, model] += 1

    def _on_fallback_succeeded(self, event: FallbackSucceeded) -> None:
        self.fallback_successes[event.provider] += 1

    def _on_fallback_exhausted(self, event: FallbackExhausted) -> None:
        self.fallback_exhaustions[event.last_error] += 1

    def _on_dropped(self, event: EventsDropped) -> None:
        self.dropped_events += event.count

    def _on_configuration(self, event: ConfigurationApplied) -> None:
        for provider in event.summary.get("providers", []):
            name, limit = provider.get("name"), provider.get("max_concurrency")
            if isinstance(name, str) and isinstance(limit, int):
                self.limits[name] = limit
        for name in event.providers:
            self.circuits.setdefault(name, "closed")

    def _on_limit(self, event: ConcurrencyLimitChanged) -> None:
        self.limits[event.provider] = event.new

    def _on_circuit(self, event: CircuitStateChanged) -> None:
        if self.circuits.get(event.provider) != "disabled":
            self.circuits[event.provider] = event.to_state

    def _on_disabled(self, event: ProviderDisabled) -> None:
        self.circuits[event.provider] = "disabled"


class Figures(NamedTuple):
    """Everything an exporter reports, taken at one log position.

    ``None`` marks a figure the source cannot know (a log file has no in-flight count).
    """

    position: int
    """The last log position the figures include."""
    events: int
    """Events folded by the projections (the runtime's own count)."""
    metrics: dict[str, ProviderMetrics]
    """The projections' per-provider figures: equal to ``get_metrics()``."""
    latency_buckets: dict[str, list[int]]
    """A copy of each provider's :class:`LatencyHistogram` bucket counts."""
    fold: ExportFold
    """The breakdowns, folded up to :attr:`position` (read it, do not change it)."""
    in_flight: dict[str, int] | None
    limits: dict[str, int]
    circuits: dict[str, str]
    pending_events: int | None
    """Events waiting in the log writer's buffer (above 0 while the store fails)."""
    store_failing: bool | None


class RuntimeFigures:
    """Figures of a live runtime, read when :meth:`figures` is called."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._fold = ExportFold()
        self._lock = threading.Lock()

    def figures(self) -> Figures:
        """Return the runtime's figures now (a few actor asks; the fold catches up).

        Raises:
            RoutingError: the runtime is closed.
        """
        rt = self.runtime
        view = rt._describe_log()
        with self._lock:
            # Reads only rows already committed and folded by the projections, so both agree.
            self._fold.catch_up(view.store, view.position)
        health = rt.get_provider_health()
        in_flight = rt.get_active_requests()
        assert isinstance(in_flight, dict)
        return Figures(
            position=view.position,
            events=view.events,
            metrics=view.metrics,
            latency_buckets=view.latency_buckets,
            fold=self._fold,
            in_flight=in_flight,
            limits={name: rt.get_provider(name).max_concurrency for name in rt.list_providers()},
            circuits={name: h.state for name, h in health.items()},
            pending_events=view.pending_events,
            store_failing=view.store_failing,
        )


class LogFigures:
    """Figures of an event log file, following what is appended to it between calls.

    The file is opened read-only; call :meth:`close` when done.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from routeledger._replay import open_readonly

        self.store = open_readonly(path)
        self.projections = Projections()
        self._fold = ExportFold()
        self._lock = threading.Lock()

    def figures(self) -> Figures:
        """Fold what was appended since the last call and return the figures.

        Events of types this version does not know are skipped and counted
        (``store.skipped_unknown``), never fatal: a server outlives a newer writer.
        """
        with self._lock:
            apply, fold = self.projections.apply, self._fold.apply
            for position, event in self.store.read(self._fold.position + 1, strict=False):
                apply(position, event)
                fold(position, event)
            projections = self.projections
            return Figures(
                position=self._fold.position,
                events=projections.events,
                metrics=projections.metrics.snapshot(),
                latency_buckets=latency_buckets(projections),
                fold=self._fold,
                in_flight=None,
                limits=dict(self._fold.limits),
                circuits=dict(self._fold.circuits),
                pending_events=None,
                store_failing=None,
            )

    def close(self) -> None:
        """Close the file."""
        self.store.close()
