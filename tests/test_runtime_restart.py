"""A runtime started on an existing log continues from it: figures, changes, health, signals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from routeledger import (
    ABTestConfig,
    ConfigError,
    HealthConfig,
    PoolConfig,
    Runtime,
    replay,
)
from routeledger.actors import VirtualClock
from routeledger.testing import Behaviour, no_backoff

PERIODS = ("hour", "day", "week", "month", "all")


def assert_live_equals_replay(rt: Runtime, db: Path) -> None:
    """Check that the runtime's figures equal a replay of its log, for every period."""
    rt.flush()
    replayed = replay(db)
    assert rt.get_metrics() == replayed.metrics
    for period in PERIODS:
        assert rt.get_usage(period) == replayed.usage(period)
    for test, results in replayed.ab_results.items():
        assert rt.get_ab_test_results(test) == results


def test_a_restarted_runtime_reports_the_figures_replayed_from_its_log(
    fakes: Any, config_for: Any, req: Any, db: Path
) -> None:
    """Right after start on an existing log, and after more requests, live equals replay."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b})
    with Runtime.start(cfg, event_log=db) as rt:
        for _ in range(3):
            rt.complete(req())
    with Runtime.start(cfg, event_log=db) as rt:
        metrics = rt.get_metrics()
        assert sum(m.requests for m in metrics.values()) == 3
        assert metrics == replay(db).metrics
        assert_live_equals_replay(rt, db)
        for _ in range(2):
            rt.complete(req())
        assert_live_equals_replay(rt, db)
        assert sum(m.requests for m in rt.get_metrics().values()) == 5


def test_run_time_changes_survive_a_restart_under_the_same_configuration(
    fakes: Any, config_for: Any, req: Any, db: Path
) -> None:
    """Priorities, limits, pools and A/B tests (with their results) come back after a restart."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b}, strategy="round-robin")
    pool = PoolConfig(name="p", providers=["b"], strategy="round-robin")
    test = ABTestConfig(name="t", variant_a="a", variant_b="b", split_ratio=0.5)
    with Runtime.start(cfg, event_log=db) as rt:
        rt.set_provider_priority("b", 500)
        rt.set_concurrent_limit("a", 3)
        rt.create_pool(pool)
        rt.setup_ab_test(test)
        for _ in range(4):
            rt.complete(req(), ab_test="t")
        rt.record_ab_test_metrics("t", "A", latency_ms=12.0, cost=0.5)
        before = rt.get_ab_test_results("t")
    with Runtime.start(cfg, event_log=db) as rt:
        assert rt.route_request(req()).provider == "b"
        assert rt.get_provider("b").priority == 500
        assert rt.get_provider("a").max_concurrency == 3
        assert rt.get_from_pool("p") == "b"
        assert rt.get_ab_test_results("t") == before
        assert sum(v.requests for v in before.values()) == 5
        assert rt.get_for_ab_test("t").variant in ("A", "B")
        assert_live_equals_replay(rt, db)


def test_the_same_pool_or_test_again_after_a_restart_is_a_no_op_another_is_an_error(
    fakes: Any, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Repeating a pool or test keeps it and its results; a different one needs replace."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b})
    pool = PoolConfig(name="p", providers=["a", "b"], strategy="weighted", weights={"a": 1.0})
    test = ABTestConfig(name="t", variant_a="a", variant_b="b")
    with Runtime.start(cfg, event_log=db) as rt:
        rt.create_pool(pool)
        rt.setup_ab_test(test)
        rt.complete(req(), ab_test="t")
    with Runtime.start(cfg, event_log=db) as rt:
        rt.create_pool(pool)
        rt.setup_ab_test(test)
        assert sum(v.requests for v in rt.get_ab_test_results("t").values()) == 1
        with pytest.raises(ConfigError, match="p"):
            rt.create_pool(PoolConfig(name="p", providers=["a"]))
        with pytest.raises(ConfigError, match="t"):
            rt.setup_ab_test(ABTestConfig(name="t", variant_a="b", variant_b="a"))
        rt.create_pool(PoolConfig(name="p", providers=["a"]), replace=True)
        assert rt.get_from_pool("p") == "a"
        rt.setup_ab_test(ABTestConfig(name="t", variant_a="b", variant_b="a"), replace=True)
        assert sum(v.requests for v in rt.get_ab_test_results("t").values()) == 0
        assert_live_equals_replay(rt, db)
    assert len(events(db, "pool.created", name="p")) == 2
    assert len(events(db, "ab.test_created", name="t")) == 2


def test_a_changed_configuration_drops_the_run_time_changes_and_says_which(
    fakes: Any, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Another configuration wins: earlier run-time changes are dropped, with an event."""
    a, b = fakes(2)
    with Runtime.start(config_for({"a": a, "b": b}), event_log=db) as rt:
        rt.set_provider_priority("b", 500)
        rt.create_pool(PoolConfig(name="p", providers=["b"]))
        rt.setup_ab_test(ABTestConfig(name="t", variant_a="a", variant_b="b"))
    changed = config_for({"a": a, "b": b}, strategy="least-loaded")
    with Runtime.start(changed, event_log=db) as rt:
        assert rt.get_provider("b").priority == changed.providers[1].priority != 500
        with pytest.raises(Exception, match="unknown pool"):
            rt.get_from_pool("p")
        with pytest.raises(Exception, match="unknown A/B test"):
            rt.get_for_ab_test("t")
        assert rt.get_ab_test_results("t") == replay(db).ab_results["t"]  # the log's results
        assert_live_equals_replay(rt, db)
    [dropped] = events(db, "config.changes_dropped")
    assert dropped.priorities == {"b": 500}
    assert dropped.pools == ["p"] and dropped.ab_tests == ["t"]
    digests = [e.digest for e in events(db, "config.applied")]
    assert dropped.previous_digest == digests[0] and dropped.digest == digests[1]


def test_configuration_versions_form_one_sequence_across_restarts(
    fakes: Any, config_for: Any, db: Path, events: Any
) -> None:
    """config.applied numbers 1, 2, 3 over three starts, the configuration changed or not."""
    (a,) = fakes(1)
    for strategy in ("round-robin", "round-robin", "cost"):
        with Runtime.start(config_for({"a": a}, strategy=strategy), event_log=db):
            pass
    assert [e.config_version for e in events(db, "config.applied")] == [1, 2, 3]


def test_a_circuit_open_when_the_log_ends_stays_open_for_the_rest_of_its_cooldown(
    fakes: Any, config_for: Any, req: Any, db: Path, events: Any, settled: Any
) -> None:
    """A restart 10 s into a 30 s cooldown keeps the circuit open 20 s more, then probes."""
    (bad,) = fakes(1, Behaviour(status=500))
    (good,) = fakes(1)
    cfg = config_for(
        {"bad": bad, "good": good},
        per_provider={"bad": {"priority": 10}},
        health=HealthConfig(failure_threshold=2, cooldown_s=30.0),
        failover=no_backoff(),
    )
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        for _ in range(2):
            rt.complete(req())
            settled(rt)
        assert rt.get_provider_health()["bad"].state == "open"
    transitions = len(events(db, "circuit.state_changed"))
    bad.set_behaviour(Behaviour())
    later = VirtualClock(start=clock.time() + 10.0)
    with Runtime.start(cfg, event_log=db, clock=later, active_health_checks=False) as rt:
        assert rt.get_provider_health()["bad"].state == "open"
        assert rt.complete(req()).provider == "good"
        later.advance(19.0)
        rt.tick()
        assert rt.complete(req()).provider == "good"  # 1 s of cooldown left
        later.advance(2.0)
        rt.tick()
        settled(rt)
        assert rt.get_provider_health()["bad"].state == "half_open"
        assert rt.complete(req()).provider == "bad"  # the probe
        settled(rt)
        assert rt.get_provider_health()["bad"].state == "closed"
    states = [(e.from_state, e.to_state) for e in events(db, "circuit.state_changed")]
    # Nothing was recorded at the restart: the log already said the circuit was open.
    assert states[transitions:] == [("open", "half_open"), ("half_open", "closed")]


def test_latency_statistics_and_rotation_positions_continue_from_the_log(
    fakes: Any, config_for: Any, req: Any, db: Path, settled: Any
) -> None:
    """The latency EWMA each provider is ranked by, and the round-robin turn, carry over."""
    a, b, c = fakes(3)
    cfg = config_for({"a": a, "b": b, "c": c}, strategy="round-robin")
    with Runtime.start(cfg, event_log=db) as rt:
        first = [rt.complete(req()).provider for _ in range(4)]
        settled(rt)
        stats = {n: h.read_stats() for n, h in rt._handles.items()}
    with Runtime.start(cfg, event_log=db) as rt:
        assert {n: h.read_stats().latency_ms for n, h in rt._handles.items()} == {
            n: s.latency_ms for n, s in stats.items()
        }
        assert {n: h.read_stats().successes for n, h in rt._handles.items()} == {
            n: s.successes for n, s in stats.items()
        }
        second = [rt.complete(req()).provider for _ in range(2)]
    cycle = ["a", "b", "c"]
    assert first == [cycle[i % 3] for i in range(4)]
    assert second == [cycle[i % 3] for i in range(4, 6)]


CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import msgspec
    from routeledger import Message, Request, Runtime, RuntimeConfig

    cfg = msgspec.json.decode(open(sys.argv[1], "rb").read(), type=RuntimeConfig)
    rt = Runtime.start(cfg, event_log=sys.argv[2])
    for _ in range(int(sys.argv[3])):
        rt.complete(Request(model="fake-model", messages=[Message(role="user", content="hi")],
                            max_tokens=8))
    rt.set_provider_priority("b", 900)
    rt.flush()
    print(json.dumps(sum(m.requests for m in rt.get_metrics().values())), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_runtime_killed_after_a_flush_continues_from_its_log_three_starts_later(
    fakes: Any, config_for: Any, req: Any, db: Path, tmp_path: Path, events: Any
) -> None:
    """Start, SIGKILL (after a flush), start, close, start: every figure and change carries over."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b})
    (tmp_path / "cfg.json").write_bytes(msgspec.json.encode(cfg))
    (tmp_path / "child.py").write_text(CHILD)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json"), str(db), "3"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    assert json.loads(proc.stdout) == 3
    with Runtime.start(cfg, event_log=db) as rt:
        assert sum(m.requests for m in rt.get_metrics().values()) == 3
        assert rt.get_provider("b").priority == 900
        rt.complete(req())
        assert_live_equals_replay(rt, db)
    with Runtime.start(cfg, event_log=db) as rt:
        assert sum(m.requests for m in rt.get_metrics().values()) == 4
        assert rt.route_request(req()).provider == "b"
        assert_live_equals_replay(rt, db)
    assert [e.config_version for e in events(db, "config.applied")] == [1, 2, 3]
