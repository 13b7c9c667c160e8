"""Budgets, model fallbacks and sticky sessions in the deterministic simulation and its command."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from routeledger import replay
from routeledger.actors._sticky import session_provider
from routeledger.cli import main
from routeledger.events import ConfigError, Event, event_tag, period_start
from routeledger.sim import Scenario, Simulation, scenario_from_dict, simulate


def _provider(name: str, model: str = "m", **fields: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": name,
        "models": [{"name": model, "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
        "sim": {"latency_ms": 50.0, "latency_sigma": 0.0},
    }
    table.update(fields)
    return table


def _scenario(*providers: dict[str, Any], **top: Any) -> Scenario:
    return scenario_from_dict({"providers": list(providers), **top})


def _tagged(sim: Simulation, tag: str) -> list[Any]:
    events: list[Event] = [e for _, e in sim.store.read()]
    return [e for e in events if event_tag(e) == tag]


def test_a_simulated_budget_refuses_past_its_limit_and_is_recorded_once() -> None:
    """The budget caps simulated spend within one request, refuses the rest, says so once."""
    s = _scenario(
        _provider("a"),
        _provider("b"),
        budgets=[{"name": "daily", "limit": 0.002}],
        simulation={"requests": 200, "rate_per_s": 20.0, "max_tokens": 32, "prompt_chars": 40},
    )
    sim = Simulation(s, seed=1)
    result = sim.run()
    assert result.errors.get("BudgetExceeded", 0) > 0
    costs = [e.cost for e in _tagged(sim, "attempt.succeeded")]
    assert 0.002 <= sum(costs) <= 0.002 + max(costs)
    assert len(_tagged(sim, "budget.exceeded")) == 1
    assert result.projections is not None
    [status] = result.projections.budgets.status()
    assert status.spent == pytest.approx(sum(costs)) and status.exceeded
    assert status.period_start == period_start("day", sim.clock.time())


def test_a_simulated_fallback_serves_while_the_big_models_provider_is_down() -> None:
    """During an outage of the only provider of "big", "small" serves its requests."""
    down = _provider("big-host", "big")
    down["sim"] = {"latency_ms": 50.0, "outages": [{"start_s": 0.0, "end_s": 1e9}]}
    s = _scenario(
        down,
        _provider("small-host", "small"),
        fallbacks={"big": ["small"]},
        failover={"backoff_base_s": 0.0},
        simulation={"requests": 50, "model": "big"},
    )
    sim = Simulation(s, seed=2)
    result = sim.run()
    assert result.failed == 0
    served = Counter(e.model for e in _tagged(sim, "request.completed"))
    assert served == {"small": 50}
    assert any(d.fallback_from == "big" for d in _tagged(sim, "route.decided"))


def test_simulated_sessions_each_stay_on_their_provider() -> None:
    """With sessions, each session's requests all go to its rendezvous provider."""
    s = _scenario(
        _provider("a"),
        _provider("b"),
        _provider("c"),
        simulation={"requests": 120, "rate_per_s": 10.0, "sessions": 6},
    )
    sim = Simulation(s, seed=3)
    sim.run()
    received = {e.request_id: e.session_id for e in _tagged(sim, "request.received")}
    homes: dict[str, set[str]] = {}
    for e in _tagged(sim, "request.completed"):
        homes.setdefault(received[e.request_id], set()).add(e.provider)
    assert len(homes) == 6
    assert all(
        providers == {session_provider(s, ["a", "b", "c"])} for s, providers in homes.items()
    )


def test_a_negative_session_count_is_refused() -> None:
    """sessions below zero is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match="sessions must be >= 0"):
        _scenario(_provider("a"), simulation={"sessions": -1})


def test_simulate_and_replay_print_the_remaining_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The simulate and replay commands show each budget's spend and what is left."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        """
[simulation]
requests = 100
rate_per_s = 20.0
max_tokens = 32
prompt_chars = 40

[[providers]]
name = "a"
models = [{ name = "m", input_per_mtok = 1.0, output_per_mtok = 2.0 }]

[[budgets]]
name = "daily"
limit = 0.01
"""
    )
    db = tmp_path / "log.sqlite"
    assert main(["simulate", "--scenario", str(scenario), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "budgets (as of the log's latest request):" in out
    assert main(["replay", "--db", str(db), "budgets", "--json"]) == 0
    [status] = json.loads(capsys.readouterr().out)["budgets"]
    assert status["name"] == "daily" and status["limit"] == 0.01
    assert status["remaining"] == pytest.approx(0.01 - status["spent"])
    assert status["spent"] == pytest.approx(replay(db).metrics.snapshot()["a"].cost)
    assert simulate(_scenario(_provider("a"), simulation={"requests": 5})).failed == 0


def test_whatif_replays_recorded_tags_and_sessions_under_a_budget(tmp_path: Path) -> None:
    """A what-if with a tag budget refuses the recorded team's requests past its limit."""
    from routeledger._whatif import whatif
    from routeledger.events import BudgetConfig
    from routeledger.store import SQLiteStore

    db = tmp_path / "log.sqlite"
    recorded = _scenario(
        _provider("a"),
        _provider("b"),
        simulation={"requests": 60, "sessions": 4, "metadata": {"team": "search"}},
    )
    simulate(recorded, seed=4, db=db)
    config = recorded.config
    config.budgets = [BudgetConfig(name="search", limit=0.0005, tag="team=search")]
    result = whatif(db, config=config)
    assert result.recorded.failed == 0
    assert result.whatif.errors.get("BudgetExceeded", 0) > 0
    assert result.whatif.completed < result.recorded.completed
    store = SQLiteStore(db, readonly=True)
    try:
        sessions = {e.session_id for _, e in store.read() if event_tag(e) == "request.received"}
    finally:
        store.close()
    assert sessions == {f"session-{k}" for k in range(4)}
