"""Soak on virtual time: hours of simulated traffic leave no growing internal state."""

from __future__ import annotations

from typing import Any

from routeledger.events import Projections
from routeledger.sim import Outage, SimBehaviour, Simulation, scenario_from_dict

HOUR = 3600.0


def sizes(sim: Simulation) -> dict[str, int]:
    """Return the size of every piece of state that could grow with the number of requests."""
    router: Any = sim.router
    snapshot = sim.writer.projections.snapshot()
    return {
        "ab_assigned": len(router.ab.assigned),
        "turns": len(router._turns) + len(router._swrr),
        "retry_budget": sum(b.held() for b in router.retry_budgets.values()),
        "health_windows": sum(b.calls for b in sim.health.breakers.values()),
        "writer_pending": len(sim.writer.pending),
        "parked": sim.parked,
        "rate_windows": sum(len(c) for c in sim._calls.values()),
        "in_flight": sum(b.in_flight for b in sim.budgets.values()),
        "metrics_providers": len(snapshot.metrics),
        "ab_tests": len(snapshot.ab),
        "usage_models": len(snapshot.usage_all.by_model),
    }


def test_three_simulated_hours_keep_internal_state_bounded() -> None:
    """State measured at 1 h and 3 h is the same size; only usage gains one bucket an hour."""
    scenario = scenario_from_dict(
        {
            "simulation": {"requests": 3 * 3600 * 3, "rate_per_s": 3.0, "model": "m"},
            "strategy": "latency",
            "providers": [
                {
                    "name": n,
                    "models": [{"name": "m", "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
                }
                for n in ("a", "b", "c")
            ],
            "health": {"cooldown_s": 20.0},
            "pools": [{"name": "p", "providers": ["a", "b"], "strategy": "weighted"}],
            "ab_tests": [{"name": "t", "variant_a": "a", "variant_b": "c"}],
        }
    )
    scenario.behaviours["a"] = SimBehaviour(latency_ms=80, fail_rate=0.02)
    # "b" goes down for ten minutes in each of the first two hours.
    scenario.behaviours["b"] = SimBehaviour(
        latency_ms=120,
        outages=[Outage(start_s=1200, end_s=1800), Outage(start_s=5000, end_s=5600)],
    )
    scenario.behaviours["c"] = SimBehaviour(latency_ms=60, rate_limit_per_s=1, retry_after_s=0.5)
    sim = Simulation(scenario, seed=9)
    # Route a third of the arrivals through the pool and a third through the A/B test.
    submit = sim.submit
    turn = iter(range(10**9))

    def routed(request: Any, **routing: Any) -> None:
        k = next(turn) % 3
        submit(request, **({"pool": "p"} if k == 1 else {"ab_test": "t"} if k == 2 else {}))

    sim.submit = routed  # type: ignore[method-assign]  # wraps submit to spread the routing

    sim.run(until=1 * HOUR)
    at_1h = sizes(sim)
    hours_1h = len(sim.writer.projections.snapshot().usage_hours)
    sim.run(until=3 * HOUR)
    at_3h = sizes(sim)
    hours_3h = len(sim.writer.projections.snapshot().usage_hours)
    result = sim.run()

    assert result.completed + result.failed == 3 * 3600 * 3
    assert result.completed > 0.95 * (3 * 3600 * 3)
    assert at_1h["metrics_providers"] == 3
    # Everything below is bounded by configuration (providers, window sizes, rates),
    # never by the number of requests served so far.
    bounded = {k: v for k, v in at_3h.items() if k not in ("retry_budget",)}
    for key, value in bounded.items():
        assert value <= max(at_1h[key], 64), (key, at_1h[key], value)
    # The retry budgets hold one window (10 s) of calls at 3/s, not hours of them.
    assert at_1h["retry_budget"] <= 100
    assert at_3h["retry_budget"] <= 100
    # Usage is kept per hour: two hours more, two (or three, at a boundary) buckets more.
    assert 2 <= hours_3h - hours_1h <= 3
    assert sim.writer.projections.snapshot() == sim.store.replay(Projections()).snapshot()


def test_hours_without_a_retry_keep_the_retry_budget_window_bounded() -> None:
    """With no failure (so no retry trims it), the retry budget still holds one window only."""
    scenario = scenario_from_dict(
        {
            "simulation": {"requests": 2 * 3600 * 2, "rate_per_s": 2.0},
            "providers": [{"name": "a", "models": [{"name": "m"}]}],
        }
    )
    sim = Simulation(scenario, seed=1)
    sim.run(until=HOUR)
    at_1h = sim.router.retry_budgets["a"].held()
    sim.run()
    at_end = sim.router.retry_budgets["a"].held()
    # 10 s window at 2/s: about 20 entries, never the 7,200 requests of an hour.
    assert at_1h <= 60
    assert at_end <= 60
