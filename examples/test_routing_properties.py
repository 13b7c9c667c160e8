"""Property-based tests of a routing configuration, as a user of routeledger writes them.

They check ``examples/routeledger.toml`` (two providers, round-robin within priority tiers,
failover, circuit breaking, a cost cap) against simulated providers that Hypothesis fills
with faults: outages, latency spikes, rate limits, flapping and slow streams. Everything runs
on virtual time, so a hundred requests take milliseconds and a failure replays exactly.

Run them with ``pytest examples/test_routing_properties.py``.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings

from routeledger.testing import (
    SimBehaviour,
    Workload,
    assert_budgets_held,
    assert_cost_under,
    assert_live_equals_replay,
    assert_no_request_lost,
    assert_success_while_healthy,
    fault_scenarios,
    simulate,
)

CONFIG = Path(__file__).with_name("routeledger.toml")
PROVIDERS = ["openai", "anthropic"]
WORKLOAD = Workload(requests=120, rate_per_s=6.0, stream_share=0.2)
"""About 20 simulated seconds of traffic, some of it streamed."""


@settings(max_examples=15, deadline=None)
@given(faults=fault_scenarios(PROVIDERS, duration_s=20.0))
def test_no_request_is_lost_and_no_budget_is_exceeded(faults: dict[str, SimBehaviour]) -> None:
    """Whatever the providers do, every request ends once and budgets hold."""
    run = simulate(CONFIG, faults, WORKLOAD, seed=1)
    assert_no_request_lost(run)
    assert_budgets_held(run)
    assert_live_equals_replay(run)


@settings(max_examples=15, deadline=None)
@given(faults=fault_scenarios(PROVIDERS, duration_s=20.0, keep_one_healthy=True))
def test_requests_succeed_while_one_provider_is_healthy(faults: dict[str, SimBehaviour]) -> None:
    """With one provider answering every call, failover serves nearly every request."""
    run = simulate(CONFIG, faults, WORKLOAD, seed=2)
    assert_success_while_healthy(run, min_rate=0.95)


def test_the_cost_cap_holds_for_every_request() -> None:
    """No request costs more than the configured max_cost_per_request (0.05)."""
    run = simulate(CONFIG, workload=Workload(requests=50, max_tokens=4000), seed=3)
    assert_cost_under(run, per_request=0.05)
