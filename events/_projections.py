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

from routeledger.events._abresults import AB_SEED_KEYS, ABProjection, ABState
from routeledger.events._budgets import BudgetProjection, BudgetState
from routeledger.events._events import Event
from routeledger.events._fold import Handler, Projection
from routeledger.events._metrics import LatencyHistogram, MetricsProjection, MetricsState
from routeledger.events._routing import RoutingProjection, RoutingState
from routeledger.events._types import ABVariantResult, ProviderMetrics, UsageReport
from routeledger.events._usage import PERIODS, UsageProjection, UsageState

__all__ = [
    "AB_SEED_KEYS",
    "PERIODS",
    "ABProjection",
    "LatencyHistogram",
    "MetricsProjection",
    "Projection",
    "Projections",
    "ProjectionsSnapshot",
    "ProjectionsState",
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


class ProjectionsState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the projections need to continue their fold, as plain data.

    Unlike :class:`ProjectionsSnapshot` (the reported figures), this is the fold state itself,
    routing included: folding the events after ``position`` into
    ``Projections.from_state(state)`` gives what folding the whole log gives. Stored snapshots
    (``routeledger.store``) encode it.
    """

    position: int
    events: int
    metrics: MetricsState
    usage: UsageState
    ab: ABState
    routing: RoutingState
    budgets: BudgetState = msgspec.field(default_factory=BudgetState)


class Projections:
    """Metrics, usage and A/B results folded together from one stream of events.

    Attributes:
        metrics: per-provider figures (also a mapping of provider to :class:`ProviderMetrics`).
        usage: usage per period (callable: ``usage("day")``).
        ab: A/B test outcomes.
        routing: the routing state a restarted runtime continues from (not part of
            :meth:`snapshot`: it is what routing reads, not a reported figure).
        budgets: what each spend budget spent in its period (``budgets.status(now)``).
        position: the position of the last event applied (0 before any).
        events: how many events were applied.
        skipped_unknown: events of unknown types a non-strict replay skipped (set by the
            reader; never part of :meth:`snapshot`, since a live fold skips nothing).
        contiguous: every position from 1 to ``position`` was folded, none skipped (an
            unknown or damaged row, or another writer's events the live fold never saw).
            Only such a state may be stored as a snapshot of the log up to ``position``.
        snapshot_position: the position of the stored snapshot the fold started from (0:
            it started from position 1); set by the reader.
    """

    def __init__(self) -> None:
        self.metrics = MetricsProjection()
        self.usage = UsageProjection()
        self.ab = ABProjection()
        self.routing = RoutingProjection()
        self.budgets = BudgetProjection()
        self.position = 0
        self.events = 0
        self.skipped_unknown = 0
        self.contiguous = True
        self.snapshot_position = 0
        # One flat table: an event costs one lookup here, not one per projection.
        dispatch: dict[type[Event], Handler] = {}
        parts: tuple[Any, ...] = (self.metrics, self.usage, self.ab, self.routing, self.budgets)
        for part in parts:
            for event_type, handler in part.handlers.items():
                if event_type in dispatch:
                    dispatch[event_type] = _both(dispatch[event_type], handler)
                else:
                    dispatch[event_type] = handler
        self._dispatch = dispatch

    def apply(self, position: int, event: Event) -> None:
        """Fold one event stored at ``position`` into every projection."""
        if position != self.position + 1:
            self.contiguous = False
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

    def state(self) -> ProjectionsState:
        """Return the fold state of every projection (a copy: later folds do not change it)."""
        return ProjectionsState(
            position=self.position,
            events=self.events,
            metrics=self.metrics.state(),
            usage=self.usage.state(),
            ab=self.ab.state(),
            routing=self.routing.state(),
            budgets=self.budgets.state(),
        )

    @classmethod
    def from_state(cls, state: ProjectionsState) -> Projections:
        """Return projections that continue the fold ``state`` was taken from.

        Raises:
            ValueError: ``state`` is not sound (a histogram that does not add up, a negative
                position).
        """
        if state.position < 0 or not 0 <= state.events <= state.position:
            raise ValueError(f"position {state.position} with {state.events} events folded")
        projections = cls()
        projections.position = state.position
        projections.events = state.events
        projections.metrics.load_state(state.metrics)
        projections.usage.load_state(state.usage)
        projections.ab.load_state(state.ab)
        projections.routing.load_state(state.routing)
        projections.budgets.load_state(state.budgets)
        return projections

    def __repr__(self) -> str:
        return f"Projections(position={self.position}, events={self.events})"


def _both(first: Handler, second: Handler) -> Handler:
    def handle(event: Any) -> None:
        first(event)
        second(event)

    return handle
