"""What-if: recorded requests replayed through the simulation under other settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from incident_support import record_outage

from routeledger._scenario import Arrival
from routeledger._whatif import whatif, whatif_lines, whatif_scenario
from routeledger.cli import main
from routeledger.events import ConfigError
from routeledger.sim import Simulation, load_scenario, simulate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scenario.toml"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "incident.toml"


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated log of 600 requests of the example scenario (its outage included)."""
    db = tmp_path_factory.mktemp("whatif") / "sim.sqlite"
    scenario = load_scenario(EXAMPLE)
    scenario.requests = 600
    simulate(scenario, seed=1, db=db)
    return db


@pytest.fixture(scope="module")
def live_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real runtime's log of an outage of "primary" against loopback fake providers."""
    db = tmp_path_factory.mktemp("whatif") / "live.sqlite"
    record_outage(db, requests=80)
    return db


def test_the_same_seed_gives_the_same_answer(sim_log: Path) -> None:
    """Two what-ifs with one seed are equal; the recorded side is the log's own figures."""
    a = whatif(sim_log, strategy="round-robin", config=EXAMPLE, seed=4)
    b = whatif(sim_log, strategy="round-robin", config=EXAMPLE, seed=4)
    assert a == b
    assert a.recorded.requests == a.whatif.requests == 600
    assert a.strategy == "round-robin" and a.recorded_strategy == "latency"
    assert a.traced == ["capped", "flaky", "steady"] and a.untraced == []


def test_a_real_runtime_log_is_replayed_under_its_recorded_configuration(live_log: Path) -> None:
    """With only --strategy, the configuration the log recorded is simulated."""
    result = whatif(live_log, strategy="least-loaded")
    assert result.config == "recorded"
    assert result.recorded.requests == 80 and result.whatif.requests == 80
    assert result.recorded.share.keys() <= {"primary", "backup"}
    assert 1.0 <= result.whatif.attempts_per_request <= 3.0
    assert result.whatif.latency_p50_ms > 0


def test_a_provider_the_log_never_tried_is_said_to_have_no_trace(
    live_log: Path, tmp_path: Path
) -> None:
    """A provider added by the what-if configuration is listed as untraced, with a limit."""
    other = tmp_path / "other.toml"
    other.write_text(
        'strategy = "round-robin"\n'
        + "".join(
            f'[[providers]]\nname = "{n}"\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
            f'models = [{{ name = "m", input_per_mtok = 1.0, output_per_mtok = 2.0 }}]\n'
            for n in ("primary", "backup", "newcomer")
        )
    )
    result = whatif(live_log, config=other)
    assert result.untraced == ["newcomer"]
    assert any("'newcomer' was never tried" in limit for limit in result.limits)
    assert "newcomer" in result.whatif.share


def test_the_command_prints_both_sides_and_its_limits(
    sim_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text output states the method, both columns and the limits; --json is data."""
    assert main(["whatif", "--db", str(sim_log), "--strategy", "cost"]) == 2
    assert "does not record its configuration" in capsys.readouterr().err
    assert main(["whatif", "--db", str(sim_log), "--config", str(EXAMPLE)]) == 0
    text = capsys.readouterr().out
    assert "method: trace-driven simulation of 600 recorded request(s)" in text
    assert "recorded" in text and "what-if" in text and "limits:" in text
    assert main(["whatif", "--db", str(sim_log), "--config", str(EXAMPLE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recorded"]["requests"] == 600 and "share" in data["whatif"]


def test_without_a_recorded_configuration_a_strategy_alone_is_refused(sim_log: Path) -> None:
    """A simulated log records no configuration: the what-if needs one given."""
    with pytest.raises(ConfigError, match="does not record its configuration"):
        whatif(sim_log, strategy="cost")
    with pytest.raises(ConfigError, match="give a strategy or a configuration"):
        whatif(sim_log)


def test_a_scenario_file_is_compared_with_itself_under_another_strategy() -> None:
    """whatif --scenario keeps the workload and behaviours and changes the settings."""
    result = whatif_scenario(FIXTURE, strategy="least-loaded", seed=0)
    assert result.baseline == "scenario"
    assert result.recorded.requests == result.whatif.requests == 120
    assert result.recorded.completed == 120
    assert "scenario" in whatif_lines(result)[3]


def test_recorded_arrivals_are_read_one_ahead_of_simulated_time() -> None:
    """The simulation pulls arrivals as it goes, so a long trace never sits in memory."""
    scenario = load_scenario(EXAMPLE)
    taken: list[int] = []

    def arrivals():  # type: ignore[no-untyped-def]
        for i in range(1000):
            taken.append(i)
            yield Arrival(at_s=i * 1.0, model="chat")

    sim = Simulation(scenario, seed=0)
    sim.schedule_trace(arrivals())
    sim.run(until=10.5)
    assert len(taken) <= 13
    assert sim.completed + sim.failed >= 10


def test_a_window_replays_only_its_requests(
    sim_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from/--to select the requests received in the window, on both sides."""
    args = ["whatif", "--db", str(sim_log), "--config", str(EXAMPLE), "--json"]
    assert main([*args, "--from", "2", "--to", "6"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert 50 < data["whatif"]["requests"] < 150
    assert abs(data["recorded"]["requests"] - data["whatif"]["requests"]) <= 5


def test_the_entry_point_is_public() -> None:
    """routeledger.whatif and routeledger.WhatIf are the package's own names."""
    import routeledger

    assert routeledger.whatif is whatif
    assert "WhatIf" in routeledger.__all__ and "whatif" in routeledger.__all__
