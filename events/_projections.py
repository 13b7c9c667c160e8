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

from typing import Any

import msgspec

from routeledger.events._abresults import AB_SEED_KEYS, ABProjection
from routeledger.events._events import Event
from routeledger.events._fold import Handler, Projection
from routeledger.events._metrics import LatencyHistogram, MetricsProjection
from routeledger.events._routing import RoutingProjection
from routeledger.events._types import ABVariantResult, ProviderMetrics, UsageReport
from routeledger.events._usage import PERIODS, UsageProjection

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
