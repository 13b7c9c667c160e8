"""The routing state a restarted runtime continues from, folded from its log.

A runtime started on an existing log does not begin from nothing: it continues from what the
log says. :class:`RoutingProjection` folds, like every projection, each event once in order:

- the configuration last applied (its digest) and how many have been, so that
  ``config.applied`` numbers form one sequence across restarts;
- the run-time changes made under that configuration: priorities, concurrency limits, pools
  and A/B tests (a configuration with another digest drops them: it wins);
- every provider's last circuit transition (a circuit open when the log ends stays open for
  the rest of its cooldown) and its latency statistics (what the ``latency`` strategy ranks
  by), folded by :func:`fold_attempt`, the same function the live runtime uses;
- the rotation position of every (pool, strategy) and the routing version counter;
- every provider's ``provider.rate_limited`` with the latest ``until`` (a provider asked to be
  left alone stays left alone after a restart; the router folds it into its ``RateLimits``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from routeledger.events._events import (
    ABTestCreated,
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    ConcurrencyLimitChanged,
    ConfigurationApplied,
    Event,
    PoolCreated,
    PriorityChanged,
    ProviderRateLimited,
    RouteDecided,
)

__all__ = [
    "ALPHA",
    "FAILURE_PENALTY_MS",
    "ProviderStats",
    "RoutingProjection",
    "RoutingState",
    "fold_attempt",
    "peak_ewma",
]

ALPHA = 0.3
"""Weight of a new sample that is not a new peak."""
FAILURE_PENALTY_MS = 1000.0
"""The least latency a failed attempt counts as, so that failing fast never looks fast."""


class ProviderStats(NamedTuple):
    """What routing knows of a provider's recent answers.

    ``latency_ms`` is the peak-sensitive EWMA of attempt latency (failures count as a penalty
    sample); ``None`` until the provider has answered once.
    """

    latency_ms: float | None = None
    ttft_ms: float | None = None
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0
    last_used: float | None = None


def peak_ewma(current: float | None, sample: float) -> float:
    """Fold ``sample`` into ``current``: jump up to a new peak at once, decay down slowly.

    Jumping to peaks makes a provider that just got slow lose traffic at once; decaying
    makes it win traffic back only as fast answers accumulate.
    """
    if current is None or sample >= current:
        return sample
    return current + ALPHA * (sample - current)


def fold_attempt(
    s: ProviderStats,
    *,
    ok: bool,
    latency_ms: float,
    ts: float,
    ttft_ms: float | None = None,
    counts_against_health: bool = True,
    rate_limited: bool = False,
) -> ProviderStats:
    """Return ``s`` with one attempt's end folded in."""
    if ok:
        ttft = s.ttft_ms if ttft_ms is None else peak_ewma(s.ttft_ms, ttft_ms)
        return s._replace(
            latency_ms=peak_ewma(s.latency_ms, latency_ms),
            ttft_ms=ttft,
            successes=s.successes + 1,
            last_used=ts,
        )
    if not counts_against_health:
        # The request was at fault, not the provider: its speed tells nothing.
        return s._replace(failures=s.failures + 1, last_used=ts)
    penalty = max(latency_ms, FAILURE_PENALTY_MS, 2 * (s.latency_ms or 0.0))
    return s._replace(
        latency_ms=peak_ewma(s.latency_ms, penalty),
        failures=s.failures + 1,
        rate_limited=s.rate_limited + rate_limited,
        last_used=ts,
    )


class RoutingState(msgspec.Struct, frozen=True, kw_only=True):
    """A :class:`RoutingProjection`'s state as plain data, in fold (insertion) order.

    ``turns`` is a list of ``(pool, strategy, decisions)``: a map key cannot be a pair.
    """

    config_digest: str | None
    config_version: int
    priorities: dict[str, int]
    limits: dict[str, int]
    pools: dict[str, PoolCreated]
    ab_tests: dict[str, ABTestCreated]
    circuits: dict[str, CircuitStateChanged]
    stats: dict[str, ProviderStats]
    turns: list[tuple[str | None, str, int]]
    routing_version: int
    rate_limited: dict[str, ProviderRateLimited] = {}


class RoutingProjection:
    """Fold the events that routing state is rebuilt from (see the module docstring).

    Attributes:
        config_digest: The digest of the configuration last applied (``None``: none yet).
        config_version: How many configurations have been applied.
        priorities: Priorities changed at run time under that configuration.
        limits: Concurrency limits changed at run time under that configuration.
        pools: Every pool defined under that configuration, by name.
        ab_tests: Every A/B test defined under that configuration, by name.
        circuits: Each provider's last circuit transition.
        stats: Each provider's latency statistics.
        turns: Decisions made per (pool, strategy): the rotation positions.
        routing_version: The routing version of the last decision.
        rate_limited: Each provider's rate limit with the latest end.
    """

    def __init__(self) -> None:
        self.config_digest: str | None = None
        self.config_version = 0
        self.priorities: dict[str, int] = {}
        self.limits: dict[str, int] = {}
        self.pools: dict[str, PoolCreated] = {}
        self.ab_tests: dict[str, ABTestCreated] = {}
        self.circuits: dict[str, CircuitStateChanged] = {}
        self.stats: dict[str, ProviderStats] = {}
        self.turns: dict[tuple[str | None, str], int] = {}
        self.routing_version = 0
        self.rate_limited: dict[str, ProviderRateLimited] = {}
        self.handlers: dict[type[Event], Any] = {
            ConfigurationApplied: self._on_config,
            PriorityChanged: self._on_priority,
            ConcurrencyLimitChanged: self._on_limit,
            PoolCreated: self._on_pool,
            ABTestCreated: self._on_ab_test,
            CircuitStateChanged: self._on_circuit,
            AttemptSucceeded: self._on_succeeded,
            AttemptFailed: self._on_failed,
            RouteDecided: self._on_decided,
            ProviderRateLimited: self._on_rate_limited,
        }

    def apply(self, position: int, event: Event) -> None:
        """Fold one event; others are ignored."""
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def state(self) -> RoutingState:
        """Return the fold state as plain data: what a snapshot needs to continue the fold."""
        return RoutingState(
            config_digest=self.config_digest,
            config_version=self.config_version,
            priorities=dict(self.priorities),
            limits=dict(self.limits),
            pools=dict(self.pools),
            ab_tests=dict(self.ab_tests),
            circuits=dict(self.circuits),
            stats=dict(self.stats),
            turns=[(pool, strategy, n) for (pool, strategy), n in self.turns.items()],
            routing_version=self.routing_version,
            rate_limited=dict(self.rate_limited),
        )

    def load_state(self, state: RoutingState) -> None:
        """Replace the fold state with ``state`` (as :meth:`state` returned it)."""
        self.config_digest = state.config_digest
        self.config_version = state.config_version
        self.priorities = dict(state.priorities)
        self.limits = dict(state.limits)
        self.pools = dict(state.pools)
        self.ab_tests = dict(state.ab_tests)
        self.circuits = dict(state.circuits)
        self.stats = dict(state.stats)
        self.turns = {(pool, strategy): n for pool, strategy, n in state.turns}
        self.routing_version = state.routing_version
        self.rate_limited = dict(state.rate_limited)

    def _on_config(self, event: ConfigurationApplied) -> None:
        self.config_version += 1
        if event.digest != self.config_digest:
            self.priorities.clear()
            self.limits.clear()
            self.pools.clear()
            self.ab_tests.clear()
        self.config_digest = event.digest

    def _on_priority(self, event: PriorityChanged) -> None:
        self.priorities[event.provider] = event.new

    def _on_limit(self, event: ConcurrencyLimitChanged) -> None:
        self.limits[event.provider] = event.new

    def _on_pool(self, event: PoolCreated) -> None:
        self.pools[event.name] = event

    def _on_ab_test(self, event: ABTestCreated) -> None:
        self.ab_tests[event.name] = event

    def _on_circuit(self, event: CircuitStateChanged) -> None:
        self.circuits[event.provider] = event

    def _on_succeeded(self, event: AttemptSucceeded) -> None:
        s = self.stats.get(event.provider) or ProviderStats()
        self.stats[event.provider] = fold_attempt(
            s, ok=True, latency_ms=event.latency_ms, ts=event.ts, ttft_ms=event.ttft_ms
        )

    def _on_failed(self, event: AttemptFailed) -> None:
        s = self.stats.get(event.provider) or ProviderStats()
        self.stats[event.provider] = fold_attempt(
            s,
            ok=False,
            latency_ms=event.latency_ms,
            ts=event.ts,
            counts_against_health=event.counts_against_health,
            rate_limited=event.error in _RATE_LIMIT_ERRORS,
        )

    def _on_rate_limited(self, event: ProviderRateLimited) -> None:
        last = self.rate_limited.get(event.provider)
        if last is None or event.until > last.until:
            self.rate_limited[event.provider] = event

    def _on_decided(self, event: RouteDecided) -> None:
        self.routing_version = event.routing_version
        if event.chosen is not None:
            key = (event.pool, event.strategy)
            self.turns[key] = self.turns.get(key, 0) + 1


_RATE_LIMIT_ERRORS = frozenset({"RateLimited"})
"""The error names a provider's rate limit is recorded under (``RateLimited`` and kin)."""
