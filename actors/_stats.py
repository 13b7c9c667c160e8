"""Per-provider statistics: a peak-sensitive latency EWMA and outcome counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from routeledger.actors._circuit import counts_against_health
from routeledger.actors._messages import ProviderStats
from routeledger.events import RateLimited

if TYPE_CHECKING:
    from routeledger.actors._messages import Outcome

__all__ = ["FAILURE_PENALTY_MS", "StatsTracker", "peak_ewma"]

ALPHA = 0.3
"""Weight of a new sample that is not a new peak."""
FAILURE_PENALTY_MS = 1000.0
"""The least latency a failed attempt counts as, so that failing fast never looks fast."""


def peak_ewma(current: float | None, sample: float) -> float:
    """Fold ``sample`` into ``current``: jump up to a new peak at once, decay down slowly.

    Jumping to peaks makes a provider that just got slow lose traffic at once; decaying
    makes it win traffic back only as fast answers accumulate.
    """
    if current is None or sample >= current:
        return sample
    return current + ALPHA * (sample - current)


class StatsTracker:
    """Folds attempt outcomes into :class:`ProviderStats`.

    One per provider, on its handle: the thread that saw an outcome folds it in, under the
    handle's lock; the router reads the published stats.
    """

    __slots__ = ("stats",)

    def __init__(self) -> None:
        self.stats = ProviderStats()

    def record(self, outcome: Outcome) -> ProviderStats:
        """Fold one outcome in; return the new published stats."""
        s = self.stats
        if outcome.ok:
            latency = peak_ewma(s.latency_ms, outcome.latency_ms)
            ttft = s.ttft_ms
            if outcome.ttft_ms is not None:
                ttft = peak_ewma(s.ttft_ms, outcome.ttft_ms)
            self.stats = s._replace(
                latency_ms=latency,
                ttft_ms=ttft,
                successes=s.successes + 1,
                last_used=outcome.ts,
            )
        elif not counts_against_health(outcome.error):
            # The request was at fault, not the provider: its speed tells nothing.
            self.stats = s._replace(failures=s.failures + 1, last_used=outcome.ts)
        else:
            penalty = max(outcome.latency_ms, FAILURE_PENALTY_MS, 2 * (s.latency_ms or 0.0))
            self.stats = s._replace(
                latency_ms=peak_ewma(s.latency_ms, penalty),
                failures=s.failures + 1,
                rate_limited=s.rate_limited + isinstance(outcome.error, RateLimited),
                last_used=outcome.ts,
            )
        return self.stats
