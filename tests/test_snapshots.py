"""Projection snapshots: a snapshot plus the tail folds to what the whole log folds to."""

from __future__ import annotations

import ast
import hashlib
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import routeledger._startup as startup
from routeledger import ABTestConfig, ConfigError, LogConfig, PoolConfig, Runtime, replay
from routeledger.events import (
    PERIODS,
    ABMetricsRecorded,
    ABTestCreated,
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    ConcurrencyLimitChanged,
    ConfigurationApplied,
    Event,
    PoolCreated,
    PriorityChanged,
    Projections,
    ProjectionsState,
    RequestCompleted,
    RequestFailed,
    validate_config,
)
from routeledger.sim import Outage, SimBehaviour, Simulation, scenario_from_dict
from routeledger.store import (
    SNAPSHOT_FORMAT,
    MemoryStore,
    SQLiteStore,
    load_snapshot,
    read_snapshots,
    write_snapshot,
)
from routeledger.store._snapshots import STATE_VERSION, code_identity

NAMES = ("a", "b", "c")
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


# --- random logs ----------------------------------------------------------------------------


def simulated_log(seed: int, strategy: str, requests: int, outage: str | None) -> list[Event]:
    """Return the log of a simulated run: three providers, a pool, an A/B test, maybe an outage."""
    scenario = scenario_from_dict(
        {
            "simulation": {"requests": 0},
            "strategy": strategy,
            "providers": [
                {
                    "name": name,
                    "models": [{"name": "m", "input_per_mtok": 1.0 + i, "output_per_mtok": 2.0}],
                    "sim": {"latency_ms": 40.0 + 30 * i, "latency_sigma": 0.4},
                }
                for i, name in enumerate(NAMES)
            ],
            "health": {"failure_threshold": 2, "cooldown_s": 1.0, "min_calls": 2},
            "pools": [{"name": "pool", "providers": ["a", "c"], "strategy": "weighted"}],
            "ab_tests": [{"name": "ab", "variant_a": "a", "variant_b": "b", "split_ratio": 0.4}],
        }
    )
    sim = Simulation(scenario, seed=seed)
    if outage is not None:
        sim.set_behaviour(
            outage, SimBehaviour(latency_ms=50.0, outages=[Outage(start_s=0.0, end_s=3.0)])
        )
    for i in range(requests):
        routing: dict[str, Any] = [{}, {"pool": "pool"}, {"ab_test": "ab"}][i % 3]
        sim.submit(sim.make_request(i), **routing)
        sim.run(until=sim.clock.monotonic() + 0.2)
    sim.run()
    return [event for _, event in sim.store.read()]


names = st.sampled_from(NAMES)
times = st.floats(T0, T0 + 40 * 86400.0)
latencies = st.floats(0.0, 5000.0)
costs = st.none() | st.floats(0.0, 2.0)
seeds = st.dictionaries(
    st.sampled_from(["A", "B", "variantA"]),
    st.dictionaries(
        st.sampled_from(["requests", "errors", "error_rate", "avg_latency", "cost"]),
        st.floats(0.0, 50.0),
        max_size=4,
    ),
    max_size=2,
)
own_events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        AttemptSucceeded,
        request_id=st.just("r"),
        attempt=st.just(1),
        provider=names,
        model=st.just("m"),
        latency_ms=latencies,
        ttft_ms=st.none() | latencies,
        input_tokens=st.integers(0, 500),
        output_tokens=st.integers(0, 500),
        cost=costs,
        ts=times,
    ),
    st.builds(
        AttemptFailed,
        request_id=st.just("r"),
        attempt=st.just(1),
        provider=names,
        model=st.just("m"),
        error=st.sampled_from(["Timeout", "RateLimited", "StreamCancelled", "ServerError"]),
        latency_ms=latencies,
        counts_against_health=st.booleans(),
        ts=times,
    ),
    st.builds(
        RequestCompleted,
        request_id=st.just("r"),
        provider=names,
        model=st.sampled_from(["m", "n"]),
        attempts=st.just(1),
        latency_ms=latencies,
        input_tokens=st.integers(0, 500),
        output_tokens=st.integers(0, 500),
        cost=costs,
        cached=st.booleans(),
        ts=times,
    ),
    st.builds(
        RequestFailed, request_id=st.just("r"), model=st.just("m"), error=st.just("X"), ts=times
    ),
    st.builds(
        ABTestCreated,
        name=st.sampled_from(["t", "u"]),
        variant_a=names,
        variant_b=names,
        split_ratio=st.sampled_from([0.3, 0.5]),
        metrics=seeds,
        ts=times,
    ),
    st.builds(
        ABMetricsRecorded,
        test=st.sampled_from(["t", "u", "never"]),
        variant=st.sampled_from(["A", "B"]),
        latency_ms=latencies,
        cost=costs,
        error=st.booleans(),
        ts=times,
    ),
    st.builds(PriorityChanged, provider=names, old=st.just(0), new=st.integers(-5, 900), ts=times),
    st.builds(
        ConcurrencyLimitChanged, provider=names, old=st.just(1), new=st.integers(1, 9), ts=times
    ),
    st.builds(
        PoolCreated,
        name=st.sampled_from(["p", "q"]),
        providers=st.lists(names, min_size=1, max_size=3, unique=True),
        strategy=st.sampled_from(["round-robin", "weighted"]),
        ts=times,
    ),
    st.builds(
        CircuitStateChanged,
        provider=names,
        from_state=st.just("closed"),
        to_state=st.sampled_from(["open", "half_open", "closed"]),
        reason=st.just("test"),
        open_until=st.none() | times,
        ts=times,
    ),
    st.builds(
        ConfigurationApplied,
        config_version=st.just(1),
        digest=st.sampled_from(["d1", "d2"]),
        providers=st.just(list(NAMES)),
        strategy=st.just("round-robin"),
        ts=times,
    ),
)
"""Events of every type a projection folds, with the numbers a fold must carry exactly."""


@st.composite
def random_logs(draw: st.DrawFn) -> list[Event]:
    """Return a simulated log with events of the projections' own types mixed in."""
    log = simulated_log(
        draw(st.integers(0, 2**32)),
        draw(st.sampled_from(["round-robin", "latency", "cost", "least-loaded"])),
        draw(st.integers(0, 12)),
        draw(st.none() | names),
    )
    for event in draw(st.lists(own_events, max_size=30)):
        log.insert(draw(st.integers(0, len(log))), event)
    return log


def fold(
    events: list[Event], projections: Projections | None = None, start: int = 1
) -> Projections:
    """Fold ``events`` (stored from position ``start`` on) into ``projections``."""
    projections = projections if projections is not None else Projections()
    for offset, event in enumerate(events):
        projections.apply(start + offset, event)
    return projections


def assert_same_figures(got: Projections, want: Projections) -> None:
    """Check every figure and every bit of fold state of two projections, routing included."""
    assert got.state() == want.state()
    assert got.snapshot() == want.snapshot()
    for period in PERIODS:
        assert got.usage(period) == want.usage(period)
        assert got.usage.reports(period) == want.usage.reports(period)
    assert got.ab_results == want.ab_results
    routing, full = got.routing, want.routing
    assert routing.stats == full.stats and routing.turns == full.turns
    assert (routing.config_digest, routing.config_version) == (
        full.config_digest,
        full.config_version,
    )
    assert got.contiguous and got.position == want.position and got.events == want.events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=random_logs(), data=st.data())
def test_a_snapshot_plus_its_tail_folds_to_what_the_whole_log_folds_to(
    log: list[Event], data: st.DataObject
) -> None:
    """For random logs and any split: encode the state, decode it, fold the tail: same state."""
    split = data.draw(st.integers(0, len(log)))
    encoded = msgspec.msgpack.encode(fold(log[:split]).state())
    restored = Projections.from_state(msgspec.msgpack.decode(encoded, type=ProjectionsState))
    fold(log[split:], restored, start=split + 1)
    assert_same_figures(restored, fold(log))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=random_logs(), data=st.data())
def test_replay_from_a_stored_snapshot_equals_replay_from_position_1(
    log: list[Event], data: st.DataObject
) -> None:
    """A snapshot mid-log, more appends: replay(path) equals replay(path, snapshots=False)."""
    split = data.draw(st.integers(1, max(1, len(log))))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.sqlite"
        with SQLiteStore(path) as store:
            positions = store.append(log[:split])
            assert write_snapshot(store, fold(log[:split]))
            store.append(log[split:])
            assert [s.position for s in read_snapshots(store)] == [positions[-1]]
        fast = replay(path)
        assert fast.snapshot_position == split
        assert_same_figures(fast, replay(path, snapshots=False))


def test_the_simulation_folds_every_kind_of_event_a_snapshot_holds() -> None:
    """The random logs are not trivial: attempts, usage, A/B, circuits and turns all appear."""
    p = fold(simulated_log(7, "latency", 12, "a"))
    state = p.state()
    assert state.metrics.providers and state.usage.hours and state.ab.tests
    assert state.routing.circuits and state.routing.turns and state.routing.stats


# --- the writer's schedule --------------------------------------------------------------------


def logged_cfg(config_for: Any, fakes: Any, every: int, **kwargs: Any) -> Any:
    """Return a two-provider configuration whose log snapshots every ``every`` events."""
    a, b = fakes(2)
    return config_for({"a": a, "b": b}, log=LogConfig(snapshot_every=every), **kwargs)


def snapshot_positions(db: Path) -> list[int]:
    """Return the positions of the snapshots stored in ``db``, newest first."""
    with SQLiteStore(db, readonly=True) as store:
        return [s.position for s in read_snapshots(store)]


def last_position(db: Path) -> int:
    """Return the last position of the log in ``db``."""
    with SQLiteStore(db, readonly=True) as store:
        return store.last_position()


def test_the_writer_stores_a_snapshot_every_n_events_and_at_close(
    fakes: Any, config_for: Any, req: Any, db: Path
) -> None:
    """snapshot_every=10: a snapshot after the commit that passes 10 more, and one at close."""
    cfg = logged_cfg(config_for, fakes, 10)
    with Runtime.start(cfg, event_log=db) as rt:
        for _ in range(4):
            rt.complete(req())
            rt.flush()
        during = snapshot_positions(db)
        assert during and all(p >= 10 for p in during)
        assert during[0] - (during[1] if len(during) > 1 else 0) >= 10
    assert snapshot_positions(db)[0] == last_position(db)
    assert len(snapshot_positions(db)) == 2  # only the newest are kept


def test_no_snapshot_is_written_when_disabled_or_for_a_short_log(
    fakes: Any, config_for: Any, req: Any, tmp_path: Path
) -> None:
    """snapshot_every=0 writes none; a log shorter than snapshot_every gets none either."""
    for every in (0, 10_000):
        db = tmp_path / f"{every}.sqlite"
        with Runtime.start(logged_cfg(config_for, fakes, every), event_log=db) as rt:
            for _ in range(3):
                rt.complete(req())
        assert snapshot_positions(db) == []
        with sqlite3.connect(db) as raw:
            tables = {
                n for (n,) in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        raw.close()
        assert "snapshots" not in tables


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_snapshot_every_must_be_a_whole_number_of_events(bad: object, config_for: Any) -> None:
    """log.snapshot_every refuses negatives, fractions, booleans and strings."""
    cfg = config_for({"a": "http://127.0.0.1:9/v1"}, log=LogConfig(snapshot_every=bad))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="snapshot_every"):
        validate_config(cfg, environ={})


def test_only_a_fold_of_every_position_of_a_sqlite_log_is_stored(db: Path) -> None:
    """No snapshot of a fold that skipped a position, of an empty fold, or in a memory store."""
    events = simulated_log(1, "round-robin", 2, None)
    with SQLiteStore(db) as store:
        store.append(events)
        assert not write_snapshot(store, Projections())
        gappy = fold(events[1:], start=2)
        assert not gappy.contiguous
        assert not write_snapshot(store, gappy)
        assert read_snapshots(store) == []
    memory = MemoryStore()
    memory.append(events)
    assert not write_snapshot(memory, fold(events))
    assert load_snapshot(memory) is None


def test_a_snapshot_row_says_its_format_code_position_and_checksum(db: Path) -> None:
    """The stored row carries the format version, the code identity, the position and a checksum."""
    events = simulated_log(2, "round-robin", 3, None)
    with SQLiteStore(db) as store:
        store.append(events)
        write_snapshot(store, fold(events))
        (row,) = read_snapshots(store)
    assert row.position == len(events) and row.format == SNAPSHOT_FORMAT
    assert row.code == code_identity() and str(row.code).startswith(f"{STATE_VERSION}-")
    assert isinstance(row.checksum, str) and len(row.checksum) == 64


# --- starts -----------------------------------------------------------------------------------


def assert_live_equals_full_replay(rt: Runtime, db: Path) -> None:
    """Check that the runtime's figures equal a replay of its log from position 1."""
    rt.flush()
    full = replay(db, snapshots=False)
    assert rt.get_metrics() == full.metrics
    for period in PERIODS:
        assert rt.get_usage(period) == full.usage(period)
    for test, results in full.ab_results.items():
        assert rt.get_ab_test_results(test) == results
    assert_same_figures(replay(db), full)


def test_starting_two_and_three_times_with_snapshots_equals_a_full_replay(
    fakes: Any, config_for: Any, req: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three starts on one file: each starts from a snapshot and equals a full replay."""
    used: list[int] = []

    def spy(store: Any) -> Projections | None:
        found = load_snapshot(store)
        used.append(0 if found is None else found.snapshot_position)
        return found

    monkeypatch.setattr(startup, "load_snapshot", spy)
    cfg = logged_cfg(config_for, fakes, 7)
    pool = PoolConfig(name="p", providers=["b"], strategy="round-robin")
    test = ABTestConfig(name="t", variant_a="a", variant_b="b", split_ratio=0.5)
    with Runtime.start(cfg, event_log=db) as rt:
        rt.set_provider_priority("b", 500)
        rt.create_pool(pool)
        rt.setup_ab_test(test)
        for _ in range(4):
            rt.complete(req(), ab_test="t")
        rt.record_ab_test_metrics("t", "A", latency_ms=12.0, cost=0.5)
        assert_live_equals_full_replay(rt, db)
    for round_ in (2, 3):
        with Runtime.start(cfg, event_log=db) as rt:
            assert used[-1] > 0 and used[-1] == snapshot_positions(db)[0]
            assert_live_equals_full_replay(rt, db)
            assert rt.route_request(req()).provider == "b"
            assert rt.get_from_pool("p") == "b"
            for _ in range(round_):
                rt.complete(req(), ab_test="t")
            assert_live_equals_full_replay(rt, db)
    assert used[0] == 0 and used[1] < used[2]
    metrics = replay(db, snapshots=False).metrics
    assert sum(m.requests for m in metrics.values()) == 4 + 2 + 3


# --- the fold identity pin --------------------------------------------------------------------

FOLD_MODULES = ("_fold", "_metrics", "_usage", "_abresults", "_routing", "_projections", "_budgets")
FOLD_SOURCE_DIGEST = "667df1c95a944389"
"""A digest of the fold modules' code (docstrings and comments left out), for STATE_VERSION 1."""


def fold_source_digest() -> str:
    """Return a digest of the fold modules' code, without docstrings or comments."""
    root = Path(__file__).resolve().parent.parent / "events"
    digest = hashlib.sha256()
    for name in FOLD_MODULES:
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body[0] = ast.Pass()
        digest.update(ast.unparse(tree).encode())
    return digest.hexdigest()[:16]


def test_a_change_of_fold_code_asks_whether_the_snapshot_state_version_must_be_bumped() -> None:
    """The fold code is pinned next to STATE_VERSION: a change must be judged, then re-pinned."""
    assert (STATE_VERSION, fold_source_digest()) == (1, FOLD_SOURCE_DIGEST), (
        "the fold code changed. If a fold now treats an event differently, bump "
        "routeledger.store._snapshots.STATE_VERSION (stored snapshots are then ignored and "
        "rebuilt); either way, set FOLD_SOURCE_DIGEST and the pinned version to the new values."
    )
