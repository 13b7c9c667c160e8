"""What a runtime started on an existing log continues from, and what it drops.

The rule (documented in the README): run-time changes (priorities, concurrency limits,
pools, A/B tests) survive a restart while the configuration is unchanged, that is while its
digest equals the one last recorded. A configuration with another digest wins: the earlier
run-time changes are dropped, and a ``config.changes_dropped`` event lists them. What the
log says of the providers themselves (open circuits, latency statistics, rotation
positions, rate limits) carries over either way, for the providers still configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from routeledger.actors._abtests import same_definition
from routeledger.actors._circuit import Resumed, resumed_circuit
from routeledger.events import (
    ABTestConfig,
    PoolConfig,
    ProviderRateLimited,
    ProviderStats,
    RoutingProjection,
    RuntimeChangesDropped,
)

if TYPE_CHECKING:
    from routeledger.events import RuntimeConfig

__all__ = ["Resume", "plan_resume"]


class Resume(NamedTuple):
    """The routing state a runtime starts from (empty for a new log)."""

    config_version: int = 1
    """The number of the configuration being applied: one more than the log has seen."""
    priorities: dict[str, int] = {}
    limits: dict[str, int] = {}
    pools: dict[str, PoolConfig] = {}
    ab_tests: dict[str, ABTestConfig] = {}
    circuits: dict[str, Resumed] = {}
    stats: dict[str, ProviderStats] = {}
    turns: dict[tuple[str | None, str], int] = {}
    routing_version: int = 1
    rate_limited: dict[str, ProviderRateLimited] = {}
    """Each provider's latest ``provider.rate_limited`` (folded by the router's RateLimits)."""


def plan_resume(
    routing: RoutingProjection,
    config: RuntimeConfig,
    digest: str,
    *,
    wall_now: float,
    mono_now: float,
) -> tuple[Resume, RuntimeChangesDropped | None]:
    """Return what to continue from ``routing`` under ``config``, and the drop to record."""
    if routing.config_digest is None:
        return Resume(), None
    names = {p.name for p in config.providers}
    circuits = {}
    for name, last in routing.circuits.items():
        if name in names:
            resumed = resumed_circuit(
                last, config=config.health, wall_now=wall_now, mono_now=mono_now
            )
            if resumed is not None:
                circuits[name] = resumed
    carried = Resume(
        config_version=routing.config_version + 1,
        circuits=circuits,
        stats={n: s for n, s in routing.stats.items() if n in names},
        turns=dict(routing.turns),
        routing_version=max(1, routing.routing_version),
        rate_limited={n: e for n, e in routing.rate_limited.items() if n in names},
    )
    pools = {
        name: PoolConfig(
            name=e.name, providers=list(e.providers), strategy=e.strategy, weights=e.weights
        )
        for name, e in routing.pools.items()
    }
    tests = {
        name: ABTestConfig(
            name=e.name,
            variant_a=e.variant_a,
            variant_b=e.variant_b,
            split_ratio=e.split_ratio,
            sticky_key=e.sticky_key,
            metrics={k: dict(v) for k, v in e.metrics.items()} or None,
        )
        for name, e in routing.ab_tests.items()
    }
    if digest == routing.config_digest:
        resume = carried._replace(
            priorities=dict(routing.priorities),
            limits=dict(routing.limits),
            pools=pools,
            ab_tests=tests,
        )
        return resume, None
    configured_pools = {p.name: p for p in config.pools}
    configured_tests = {t.name: t for t in config.ab_tests}
    dropped = RuntimeChangesDropped(
        previous_digest=routing.config_digest,
        digest=digest,
        priorities=dict(routing.priorities),
        limits=dict(routing.limits),
        pools=sorted(n for n, p in pools.items() if configured_pools.get(n) != p),
        ab_tests=sorted(
            n for n, t in tests.items() if not same_definition(configured_tests.get(n), t)
        ),
        ts=wall_now,
    )
    changed = dropped.priorities or dropped.limits or dropped.pools or dropped.ab_tests
    return carried, dropped if changed else None
