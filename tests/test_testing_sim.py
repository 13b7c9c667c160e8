"""routeledger.testing's simulation helpers: simulate, the invariants, the fault strategies."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings

import routeledger.testing as rt_testing
from routeledger import ModelSpec, ProviderConfig, RuntimeConfig
from routeledger.events import AttemptSucceeded, ConfigError, RequestCompleted
from routeledger.testing import (
    InvariantViolated,
    Outage,
    Phase,
    PhaseError,
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

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "routeledger.toml"


def two_providers() -> RuntimeConfig:
    """Two priced providers of model "m", two slots each."""
    return RuntimeConfig(
        providers=[
            ProviderConfig(
                name=n,
                kind="openai",
                base_url="http://127.0.0.1:9/v1",
                max_concurrency=2,
                models=[ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=2.0)],
            )
            for n in ("a", "b")
        ]
    )


SMALL = Workload(requests=60, rate_per_s=20.0)


def test_the_same_seed_gives_the_same_run() -> None:
    """simulate() is deterministic: one seed, one event log."""
    faults = {"a": SimBehaviour(fail_rate=0.2)}
    one = simulate(two_providers(), faults, SMALL, seed=5)
    two = simulate(two_providers(), faults, SMALL, seed=5)
    assert one.events == two.events
    assert one.figures == two.figures and one.figures.requests == 60


def test_a_production_toml_runs_without_its_api_keys() -> None:
    """examples/routeledger.toml names key variables that are unset here: they are dropped."""
    run = simulate(EXAMPLE_CONFIG, workload=Workload(requests=10), seed=0)
    assert run.result.completed == 10
    assert run.scenario.model == "fast"


def test_behaviours_for_unknown_providers_or_out_of_range_are_refused() -> None:
    """A typo in a behaviour's provider name or field is a ConfigError, not a silent default."""
    with pytest.raises(ConfigError, match="no provider named 'c'"):
        simulate(two_providers(), {"c": SimBehaviour()}, SMALL)
    with pytest.raises(ConfigError, match="fail_rate"):
        simulate(two_providers(), {"a": SimBehaviour(fail_rate=2.0)}, SMALL)


def test_the_invariants_hold_on_a_healthy_run() -> None:
    """None of the helpers raises on a run where nothing goes wrong."""
    run = simulate(two_providers(), workload=SMALL, seed=1)
    assert_no_request_lost(run)
    assert_budgets_held(run)
    assert_success_while_healthy(run)
    assert_cost_under(run, total=1.0, per_request=0.01)
    assert_live_equals_replay(run)


def test_a_lost_request_is_reported() -> None:
    """Removing a request's final event breaks no-request-lost."""
    run = simulate(two_providers(), workload=SMALL, seed=1)
    end = next(i for i, e in enumerate(run.events) if isinstance(e, RequestCompleted))
    del run.events[end]
    with pytest.raises(InvariantViolated, match="never ended"):
        assert_no_request_lost(run)


def test_an_exceeded_budget_is_reported() -> None:
    """A provider seen with more calls in flight than its limit breaks budgets-held."""
    run = simulate(two_providers(), workload=SMALL, seed=1)
    run.max_in_flight["a"] = 3
    with pytest.raises(InvariantViolated, match="a: 3 in flight, limit 2"):
        assert_budgets_held(run)


def test_failures_while_a_provider_is_healthy_are_reported() -> None:
    """Requests whose deadline is shorter than any answer fail though both are healthy."""
    run = simulate(two_providers(), workload=Workload(requests=20, deadline_s=0.01), seed=1)
    with pytest.raises(InvariantViolated, match="succeeded while a provider was healthy"):
        assert_success_while_healthy(run, min_rate=0.5)


def test_requests_during_a_total_outage_are_not_counted_against_success() -> None:
    """While every provider is down, failures are expected and not held against the run."""
    down = [Outage(start_s=0.0, end_s=100.0, status=503)]
    run = simulate(two_providers(), {n: SimBehaviour(outages=down) for n in "ab"}, SMALL)
    assert run.result.failed == 60
    assert_success_while_healthy(run)


def test_streams_broken_mid_way_are_left_out_unless_asked_for() -> None:
    """A stream broken after its first chunk (never re-run) counts only when asked to."""
    breaking = {"a": SimBehaviour(stream_break_rate=1.0)}  # "b" answers every call whole
    run = simulate(two_providers(), breaking, Workload(requests=20, stream_share=1.0), seed=1)
    assert run.result.failed > 0
    assert_success_while_healthy(run)
    with pytest.raises(InvariantViolated, match="succeeded while a provider was healthy"):
        assert_success_while_healthy(run, count_broken_streams=True)


def test_a_cost_over_the_cap_is_reported() -> None:
    """A total or per-request cost above the cap breaks cost-under."""
    run = simulate(two_providers(), workload=SMALL, seed=1)
    with pytest.raises(InvariantViolated, match="total cost"):
        assert_cost_under(run, total=1e-9)
    with pytest.raises(InvariantViolated, match="cost"):
        assert_cost_under(run, per_request=1e-9)


def test_live_figures_that_differ_from_the_replay_are_reported() -> None:
    """A stored success that the live fold never saw breaks live-equals-replay."""
    run = simulate(two_providers(), workload=SMALL, seed=1)
    extra = next(e for e in run.events if isinstance(e, AttemptSucceeded))
    run.events.append(extra)
    with pytest.raises(InvariantViolated, match="metrics differ"):
        assert_live_equals_replay(run)


def test_health_ground_truth_follows_outages_phases_and_limits() -> None:
    """healthy_at says whether a provider answered every call at that moment."""
    phases = [
        Phase(start_s=0.0, latency_ms=50),
        Phase(start_s=5.0, latency_ms=50, errors=[PhaseError(status=503, rate=0.5)]),
        Phase(start_s=8.0, latency_ms=50),
    ]
    faults = {
        "a": SimBehaviour(outages=[Outage(start_s=1.0, end_s=2.0)], phases=phases),
        "b": SimBehaviour(rate_limit_per_s=5.0),
    }
    run = simulate(two_providers(), faults, Workload(requests=5))
    assert [run.healthy_at("a", t) for t in (0.5, 1.5, 4.0, 6.0, 9.0)] == [
        True,
        False,
        True,
        False,
        True,
    ]
    assert not run.healthy_at("b", 0.0)


@settings(max_examples=25, deadline=None)
@given(faults=fault_scenarios(["a", "b"], duration_s=10.0, keep_one_healthy=True))
def test_every_drawn_fault_scenario_is_a_valid_behaviour(faults: dict[str, SimBehaviour]) -> None:
    """simulate() accepts whatever the strategies draw, and one provider stays healthy."""
    run = simulate(two_providers(), faults, Workload(requests=10, rate_per_s=2.0))
    assert_no_request_lost(run)
    assert any(all(run.healthy_at(n, t / 2) for t in range(20)) for n in ("a", "b"))


def test_the_strategies_load_only_when_asked_for() -> None:
    """routeledger.testing imports Hypothesis lazily, through its strategies' names."""
    assert rt_testing.fault_scenarios is fault_scenarios
    with pytest.raises(AttributeError):
        rt_testing.no_such_helper  # noqa: B018
