"""``routeledger scenario``: a recorded window turned into a scenario that simulate runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from incident_support import record_outage

from routeledger._tomlwrite import dumps
from routeledger._trace import parse_time
from routeledger.cli import main
from routeledger.events import ConfigError
from routeledger.sim import load_scenario, simulate

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "incident.toml"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scenario.toml"


def test_the_pinned_incident_scenario_simulates_to_the_pinned_figures() -> None:
    """The kept fake-provider outage (tests/incident_support.py) replays to pinned figures."""
    result = simulate(load_scenario(FIXTURE), seed=0)
    assert result.projections is not None
    metrics = result.projections.metrics.snapshot()
    assert (result.completed, result.failed, result.events) == (120, 0, 635)
    assert {n: (m.successes, m.failures) for n, m in metrics.items()} == {
        "backup": (71, 0),
        "primary": (49, 6),
    }


def test_the_pinned_incident_holds_the_outage_as_a_failing_phase() -> None:
    """The outage of "primary" is a phase in which every call fails with 503."""
    scenario = load_scenario(FIXTURE)
    phases = scenario.behaviours["primary"].phases
    assert any(e.status == 503 and e.rate == 1.0 for p in phases for e in p.errors)
    assert not scenario.behaviours["backup"].phases[0].errors
    assert len(scenario.arrivals) == 120


def test_a_scenario_extracted_from_a_real_runtime_log_replays_its_outage(tmp_path: Path) -> None:
    """A live runtime's outage log becomes a scenario in which the outage fails over again."""
    db = tmp_path / "live.sqlite"
    record_outage(db, requests=70)
    out = tmp_path / "incident.toml"
    assert main(["scenario", "--db", str(db), "--bucket-s", "0.1", "-o", str(out)]) == 0
    scenario = load_scenario(out)
    assert len(scenario.arrivals) == 70
    assert any(e.status == 503 for p in scenario.behaviours["primary"].phases for e in p.errors)
    result = simulate(scenario, seed=3)
    assert result.projections is not None
    metrics = result.projections.metrics.snapshot()
    assert result.completed == 70
    assert metrics["primary"].failures > 0 and metrics["backup"].successes > 0


def test_a_window_given_in_seconds_keeps_only_its_requests(tmp_path: Path) -> None:
    """--from/--to in seconds after the log's start select the requests received in them."""
    db = tmp_path / "sim.sqlite"
    scenario = load_scenario(EXAMPLE)
    scenario.requests = 400
    simulate(scenario, seed=1, db=db)
    out = tmp_path / "w.toml"
    args = ["scenario", "--db", str(db), "--from", "2", "--to", "6", "-o", str(out)]
    assert main([*args, "--config", str(EXAMPLE)]) == 0
    extracted = load_scenario(out)
    assert 50 < len(extracted.arrivals) < 150  # about 25 a second for 4 s
    assert all(0 <= a.at_s < 4 for a in extracted.arrivals)
    assert simulate(extracted, seed=0).completed == len(extracted.arrivals)


def test_a_simulated_log_without_a_recorded_configuration_needs_one(tmp_path: Path) -> None:
    """A simulated log records no configuration: scenario says so instead of guessing."""
    db = tmp_path / "sim.sqlite"
    scenario = load_scenario(EXAMPLE)
    scenario.requests = 20
    simulate(scenario, seed=1, db=db)
    assert main(["scenario", "--db", str(db), "-o", str(tmp_path / "x.toml")]) == 2
    assert not (tmp_path / "x.toml").exists()


def test_times_are_iso_8601_or_seconds_after_the_log_start() -> None:
    """Both time forms are read; anything else is a ConfigError."""
    assert parse_time("90", log_start=1000.0) == 1090.0
    assert parse_time("1970-01-01T00:20:00Z", log_start=0.0) == 1200.0
    assert parse_time("1970-01-01T00:20:00", log_start=0.0) == 1200.0
    with pytest.raises(ConfigError):
        parse_time("yesterday", log_start=0.0)


def test_the_toml_writer_writes_what_tomllib_reads_back() -> None:
    """Tables, arrays of tables, inline arrays and quoted keys survive a round trip."""
    data = {
        "strategy": "latency",
        "skip": None,
        "simulation": {"arrivals": [{"at_s": 0.5, "model": "m"}], "requests": 1},
        "providers": [
            {"name": "a", "models": [{"name": "m", "cap": ["x"]}], "sim": {"phases": []}},
            {"name": "b", "weights": {"odd key": 1.5}},
        ],
    }
    back = tomllib.loads(dumps(data, inline=["arrivals", "phases"], header="hi"))
    del data["skip"]
    assert back == data
