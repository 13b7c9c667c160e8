"""Per-provider statistics: a peak-sensitive latency EWMA and outcome counts.

The fold itself (:func:`~routeledger.events.fold_attempt`) lives with the events, so that a
restarted runtime rebuilds the same statistics from its log; this tracker applies it to the
outcomes a live runtime sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routeledger.actors._circuit import counts_against_health
from routeledger.events import (
    ALPHA,
    FAILURE_PENALTY_MS,
    ProviderStats,
    RateLimited,
    fold_attempt,
    peak_ewma,
)

if TYPE_CHECKING:
    from routeledger.actors._messages import Outcome

__all__ = ["ALPHA", "FAILURE_PENALTY_MS", "StatsTracker", "peak_ewma"]


class StatsTracker:
    """Folds attempt outcomes into :class:`ProviderStats`.

    One per provider, on its handle: the thread that saw an outcome folds it in, under the
    handle's lock; the router reads the published stats.
    """

    __slots__ = ("stats",)

    def __init__(self, stats: ProviderStats | None = None) -> None:
        self.stats = stats if stats is not None else ProviderStats()

    def record(self, outcome: Outcome) -> ProviderStats:
        """Fold one outcome in; return the new published stats."""
        self.stats = fold_attempt(
            self.stats,
            ok=outcome.ok,
            latency_ms=outcome.latency_ms,
            ts=outcome.ts,
            ttft_ms=outcome.ttft_ms,
            counts_against_health=counts_against_health(outcome.error),
            rate_limited=isinstance(outcome.error, RateLimited),
        )
        return self.stats
