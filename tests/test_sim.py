"""The deterministic simulation: reproducibility, outages, rate limits, budgets, the command."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from routeledger.cli import main
from routeledger.events import ConfigError, Event, encode_event, event_tag
from routeledger.sim import (
    Outage,
    Scenario,
    SimBehaviour,
    Simulation,
    load_scenario,
    scenario_from_dict,
    simulate,
)
from routeledger.store import MemoryStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scenario.toml"
MODEL = "m"


def provider(name: str, **fields: Any) -> dict[str, Any]:
    """Return a scenario provider table serving model ``m``."""
    table: dict[str, Any] = {
        "name": name,
        "models": [{"name": MODEL, "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
    }
    table.update(fields)
    return table


def scenario(*providers: dict[str, Any], **top: Any) -> Scenario:
    """Return a scenario of ``providers`` (``simulation=`` and RuntimeConfig fields in ``top``)."""
    return scenario_from_dict({"providers": list(providers), **top})


def log_of(sim: Simulation) -> list[Event]:
    """Return every committed event of a simulation."""
    return [event for _, event in sim.store.read()]


def tagged(events: list[Event], tag: str) -> list[Any]:
    """Return the events of one wire tag."""
    return [e for e in events if event_tag(e) == tag]


def sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    """Return every row of a log file, in position order."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM events ORDER BY position").fetchall()


def test_same_seed_writes_the_same_sqlite_log_byte_for_byte(tmp_path: Path) -> None:
    """Two runs of one scenario with one seed store identical rows (type, ts, id, data)."""
    s = load_scenario(EXAMPLE)
    s.requests = 800
    simulate(s, seed=7, db=tmp_path / "a.sqlite")
    simulate(s, seed=7, db=tmp_path / "b.sqlite")
    a, b = sqlite_rows(tmp_path / "a.sqlite"), sqlite_rows(tmp_path / "b.sqlite")
    assert len(a) > 800 * 4
    assert a == b


def test_same_seed_gives_identical_event_encodings_in_memory() -> None:
    """The MemoryStore logs of two runs with one seed encode to the same bytes."""
    runs = []
    for _ in range(2):
        sim = Simulation(load_scenario(EXAMPLE), seed=3)
        sim.scenario.requests = 500
        sim.run()
        runs.append([encode_event(e) for e in log_of(sim)])
    assert runs[0] == runs[1]


def test_a_different_seed_writes_a_different_log(tmp_path: Path) -> None:
    """Another seed changes arrivals, latencies and choices, hence the log."""
    s = load_scenario(EXAMPLE)
    s.requests = 300
    simulate(s, seed=1, db=tmp_path / "a.sqlite")
    simulate(s, seed=2, db=tmp_path / "b.sqlite")
    assert sqlite_rows(tmp_path / "a.sqlite") != sqlite_rows(tmp_path / "b.sqlite")


def test_five_thousand_requests_all_end_and_live_figures_equal_replay() -> None:
    """The example's 5,000 requests each end once, and the live projections equal a replay."""
    from routeledger.events import Projections

    sim = Simulation(load_scenario(EXAMPLE), seed=1)
    result = sim.run()
    assert result.completed + result.failed == 5000
    events = log_of(sim)
    assert len(tagged(events, "request.received")) == 5000
    finals = tagged(events, "request.completed") + tagged(events, "request.failed")
    assert sorted(e.request_id for e in finals) == [f"sim-{i:07d}" for i in range(5000)]
    assert sim.writer.projections.snapshot() == sim.store.replay(Projections()).snapshot()


def test_an_outage_opens_the_circuit_during_the_window_and_recovery_closes_it() -> None:
    """The circuit opens inside the outage, stays out of rotation, and closes after it ends."""
    s = scenario(
        provider("down", priority=10, max_concurrency=20),
        provider("backup", max_concurrency=20),
        simulation={"requests": 2000, "rate_per_s": 20.0},
        health={"cooldown_s": 5.0, "failure_threshold": 3},
    )
    s.behaviours["down"] = SimBehaviour(
        latency_ms=50, outages=[Outage(start_s=20.0, end_s=60.0, status=503)]
    )
    s.behaviours["backup"] = SimBehaviour(latency_ms=80)
    sim = Simulation(s, seed=5)
    sim.run()
    events = log_of(sim)
    epoch = events[0].ts  # config.applied at monotonic 0
    changes = [e for e in tagged(events, "circuit.state_changed") if e.provider == "down"]
    opened = [e.ts - epoch for e in changes if e.to_state == "open"]
    closed = [e.ts - epoch for e in changes if e.to_state == "closed"]
    assert opened and all(20.0 <= t < 60.0 for t in opened)
    assert closed and closed[-1] >= 60.0
    assert changes[-1].to_state == "closed"
    assert len(tagged(events, "provider.unhealthy")) == 1
    assert len(tagged(events, "provider.recovered")) == 1
    # Traffic really moved: "down" (the preferred tier) served after the outage again.
    late_ok = [
        e
        for e in tagged(events, "attempt.succeeded")
        if e.provider == "down" and e.ts - epoch > closed[-1]
    ]
    assert late_ok
    assert sim.failed == 0


def test_rate_limits_answer_429_and_retries_wait_for_retry_after() -> None:
    """Above its rate a provider answers 429 with Retry-After, and the request fails over."""
    s = scenario(
        provider("capped", priority=10, max_concurrency=50),
        provider("other", max_concurrency=50),
        simulation={"requests": 1500, "rate_per_s": 30.0},
        # Two thirds of the calls to "capped" are refused: let every one fail over.
        failover={"max_attempts": 4, "max_attempts_per_provider": 3, "retry_budget_ratio": 1.0},
        health={"enabled": False},
    )
    s.behaviours["capped"] = SimBehaviour(latency_ms=100, rate_limit_per_s=10, retry_after_s=0.7)
    s.behaviours["other"] = SimBehaviour(latency_ms=100)
    sim = Simulation(s, seed=11)
    sim.run()
    events = log_of(sim)
    limited = [e for e in tagged(events, "attempt.failed") if e.status == 429]
    assert len(limited) > 50
    assert all(e.error == "RateLimited" and e.retry_after_s == 0.7 for e in limited)
    # Each rate-limited request failed over to the untried provider and was served there.
    limited_ids = {e.request_id for e in limited}
    served = {e.request_id: e.provider for e in tagged(events, "request.completed")}
    assert {served[r] for r in limited_ids} == {"other"}
    # Rate-limited requests were still served (by a retry or by the other provider).
    assert sim.failed == 0


def test_retry_after_is_honoured_before_the_retry_is_sent() -> None:
    """A 429 with Retry-After 2 s delays the next call to the same provider by at least 2 s."""
    s = scenario(
        provider("only", max_concurrency=5),
        simulation={"requests": 0},
        failover={"max_attempts": 3, "max_attempts_per_provider": 3},
        health={"enabled": False},
    )
    s.behaviours["only"] = SimBehaviour(
        latency_ms=10, latency_sigma=0, rate_limit_per_s=1, retry_after_s=2.0, fail_latency_ms=5
    )
    sim = Simulation(s, seed=0)
    calls: list[float] = []
    original = sim._call

    def spy(task: Any, decision: Any, timeout_s: float) -> None:
        calls.append(sim.clock.monotonic())
        original(task, decision, timeout_s)

    sim._call = spy  # type: ignore[method-assign]  # a spy records each call's time
    req = sim.make_request
    sim.submit(req(0))
    sim.submit(req(1))  # same instant: over the 1/s limit, gets a 429
    sim.run()
    assert sim.completed == 2
    # calls at 0 (ok), 0 (429), then the retry no earlier than 0.005 + 2.0.
    assert calls[:2] == [0.0, 0.0]
    assert calls[2] >= 2.005 - 1e-9


def test_concurrency_limits_are_never_exceeded() -> None:
    """Under overload no provider ever has more calls in flight than its budget."""
    s = scenario(
        provider("a", max_concurrency=3),
        provider("b", max_concurrency=5),
        strategy="least-loaded",
        simulation={"requests": 3000, "rate_per_s": 200.0},
        failover={"queue_timeout_s": 2.0},
    )
    s.behaviours["a"] = SimBehaviour(latency_ms=60)
    s.behaviours["b"] = SimBehaviour(latency_ms=60)
    sim = Simulation(s, seed=2)
    over: list[str] = []
    sim.on_step = lambda sim: over.extend(
        n for n, b in sim.budgets.items() if b.in_flight > b.limit
    )
    sim.run()
    assert over == []
    assert sim.max_in_flight == {"a": 3, "b": 5}  # reached, never passed
    started = tagged(log_of(sim), "attempt.started")
    assert max(e.in_flight for e in started if e.provider == "a") == 3
    assert all(b.in_flight == 0 for b in sim.budgets.values())


def test_a_stale_queue_timeout_does_not_end_a_later_wait_for_capacity() -> None:
    """A request that waited, ran, failed over and waits again gets its full queue time."""
    s = scenario(
        provider("p", max_concurrency=1),
        provider("q", max_concurrency=1),
        simulation={"requests": 0},
        failover={"queue_timeout_s": 5.0, "max_attempts_per_provider": 1},
    )
    s.behaviours["p"] = SimBehaviour(latency_ms=1000, latency_sigma=0, fail_latency_ms=100)
    s.behaviours["q"] = SimBehaviour(latency_ms=5500, latency_sigma=0)
    sim = Simulation(s, seed=0)
    sim.submit(sim.make_request(0), preferred_provider="q")  # holds q until 5.5
    sim.submit(sim.make_request(1), preferred_provider="p")  # holds p until 1.0
    sim.submit(sim.make_request(2), preferred_provider="p")  # waits (until 5.0 at most)
    # From 0.5 on, p fails every call: request 2 gets p at 1.0, fails at 1.1, and waits for q
    # again with a new 5 s queue time, so the first wait's timeout at 5.0 must not end it.
    sim.at(0.5, lambda: sim.set_behaviour("p", SimBehaviour(fail_rate=1.0, fail_latency_ms=100)))
    result = sim.run()
    assert result.errors == {}
    assert result.completed == 3


def test_the_command_prints_metrics_replayed_from_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`routeledger simulate` writes the log and prints the figures replayed from it."""
    db = tmp_path / "sim.sqlite"
    assert main(["simulate", "--scenario", str(EXAMPLE), "--seed", "1", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "simulated 5000 request(s)" in out
    assert f"in {db}" in out
    for name in ("steady", "flaky", "capped"):
        assert name in out
    assert "usage (all" in out
    assert len(sqlite_rows(db)) > 5000


def test_the_command_prints_json_equal_to_a_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json` prints the run's counts and the metrics of a replay of the written log."""
    from routeledger import replay

    db = tmp_path / "sim.sqlite"
    argv = ["simulate", "--scenario", str(EXAMPLE), "--seed", "1", "--db", str(db), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["completed"] + doc["failed"] == 5000
    assert doc["usage"]["requests"] == 5000
    replayed = replay(db).metrics.snapshot()
    assert set(doc["metrics"]) == set(replayed) == {"steady", "flaky", "capped"}
    for name, m in replayed.items():
        assert doc["metrics"][name]["requests"] == m.requests
    # The same seed without a file prints the same figures.
    assert main([*argv[:-3], "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_the_command_refuses_to_overwrite_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing --db file is an error (exit 2) and is left untouched."""
    db = tmp_path / "sim.sqlite"
    db.write_bytes(b"keep")
    assert main(["simulate", "--scenario", str(EXAMPLE), "--db", str(db)]) == 2
    assert "exists" in capsys.readouterr().err
    assert db.read_bytes() == b"keep"


BAD_SCENARIOS = {
    "not toml": ("[simulation\nrequests = 1", "not valid TOML"),
    "typo in simulation": (
        '[simulation]\nrequets = 5\n[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n',
        "unknown field(s) ['requets']",
    ),
    "typo in sim": (
        '[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n[providers.sim]\nlatncy_ms = 5\n',
        "providers[0].sim",
    ),
    "negative requests": (
        '[simulation]\nrequests = -1\n[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n',
        "requests must be >= 0",
    ),
    "zero rate": (
        '[simulation]\nrate_per_s = 0.0\n[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n',
        "rate_per_s",
    ),
    "outage ends first": (
        '[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n[providers.sim]\n'
        "outages = [{ start_s = 5.0, end_s = 1.0 }]\n",
        "start_s < end_s",
    ),
    "fail rate above one": (
        '[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n[providers.sim]\nfail_rate = 2.0\n',
        "fail_rate",
    ),
    "unserved model": (
        '[simulation]\nmodel = "x"\n[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n',
        "no provider serves model 'x'",
    ),
    "providers not tables": ('providers = "a"\n', "array of tables"),
    "no providers": ("[simulation]\nrequests = 1\n", "provider"),
    "bad strategy": (
        'strategy = "fastest"\n[[providers]]\nname = "a"\nmodels = [{ name = "m" }]\n',
        "strategy",
    ),
}


@pytest.mark.parametrize("text, message", BAD_SCENARIOS.values(), ids=BAD_SCENARIOS.keys())
def test_bad_scenario_files_raise_config_error_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """A malformed scenario is a ConfigError naming the problem; the command exits 2."""
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert message in str(info.value)
    assert main(["simulate", "--scenario", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("routeledger: error:")
    assert message in err
    assert "Traceback" not in err


def test_a_missing_scenario_file_is_a_config_error(tmp_path: Path) -> None:
    """A scenario path that does not exist is reported as a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_scenario(tmp_path / "nope.toml")


def test_submit_accepts_routing_options() -> None:
    """Requests submitted by hand may name a preferred provider; that is where they go."""
    s = scenario(provider("a"), provider("b"), simulation={"requests": 0})
    sim = Simulation(s, seed=0)
    for i in range(8):  # within b's budget of 10
        sim.submit(sim.make_request(i), preferred_provider="b")
    sim.run()
    chosen = {e.chosen for e in tagged(log_of(sim), "route.decided")}
    assert chosen == {"b"}
    assert isinstance(sim.store, MemoryStore)


def test_simulated_streams_record_their_first_chunk_time_and_complete() -> None:
    """Streams run through the same policy: each completes with a first-chunk time."""
    sim = Simulation(
        scenario(
            provider("a", sim={"latency_ms": 100.0, "latency_sigma": 0.0, "ttft_ms": 30.0}),
            simulation={"requests": 50, "stream_share": 1.0},
        ),
        seed=1,
    )
    result = sim.run()
    assert result.completed == 50
    succeeded = tagged(log_of(sim), "attempt.succeeded")
    assert len(succeeded) == 50
    assert all(e.stream and e.ttft_ms == pytest.approx(30.0) for e in succeeded)
    assert all(e.latency_ms == pytest.approx(100.0) for e in succeeded)
    completed = tagged(log_of(sim), "request.completed")
    assert all(e.stream for e in completed)


def test_a_stream_that_breaks_after_its_first_chunk_is_not_retried() -> None:
    """A break after the first chunk ends the stream with StreamInterrupted, one attempt."""
    sim = Simulation(
        scenario(
            provider("a", sim={"stream_break_rate": 1.0}),
            provider("b"),
            simulation={"requests": 40, "stream_share": 1.0},
            failover={"max_attempts": 3},
        ),
        seed=2,
    )
    result = sim.run()
    events = log_of(sim)
    broken = {e.request_id for e in tagged(events, "attempt.failed")}
    assert result.errors.get("StreamInterrupted", 0) == len(broken) == sim.streams_broken > 0
    for e in tagged(events, "request.failed"):
        assert e.error == "StreamInterrupted" and e.attempts == 1
    assert result.completed + result.failed == 40


def test_a_share_of_requests_streams() -> None:
    """stream_share makes about that share of the workload stream; zero draws nothing."""
    sim = Simulation(scenario(provider("a"), simulation={"requests": 400, "stream_share": 0.25}))
    sim.run()
    received = tagged(log_of(sim), "request.received")
    share = sum(e.stream for e in received) / len(received)
    assert 0.18 < share < 0.32


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"simulation": {"stream_share": 1.5}}, "stream_share"),
        ({"providers_sim": {"stream_break_rate": -0.1}}, "stream_break_rate"),
        ({"providers_sim": {"ttft_ms": -1.0}}, "ttft_ms"),
    ],
)
def test_stream_settings_out_of_range_are_config_errors(table: dict[str, Any], key: str) -> None:
    """A stream share or break rate outside [0, 1], or a negative ttft, is a ConfigError."""
    sim_table = table.get("providers_sim", {})
    with pytest.raises(ConfigError, match=key):
        scenario(
            provider("a", sim=sim_table), **{k: v for k, v in table.items() if k == "simulation"}
        )


def test_a_revoked_key_is_skipped_for_the_providers_next_key_in_the_simulation() -> None:
    """A 401 on a simulated provider's first key retries it with the next key, then rests it."""
    sim = Simulation(
        scenario(
            provider(
                "a", priority=10, api_keys=["k-revoked", "k-good"], sim={"key_statuses": [401]}
            ),
            provider("b"),
            simulation={"requests": 30},
        ),
        seed=3,
    )
    result = sim.run()
    events = log_of(sim)
    failed = tagged(events, "attempt.failed")
    assert result.completed == 30
    assert [e.error for e in failed] == ["AuthenticationError"]  # then the key rests
    served = {e.provider for e in tagged(events, "request.completed")}
    assert served == {"a"}  # the next key, never the other provider
    started = tagged(events, "attempt.started")
    assert len({e.key for e in started}) == 2


def test_key_statuses_out_of_range_are_refused() -> None:
    """A simulated key status that is no HTTP error status is a ConfigError."""
    with pytest.raises(ConfigError, match="key_statuses"):
        scenario(provider("a", api_keys=["k1", "k2"], sim={"key_statuses": [200]}))
