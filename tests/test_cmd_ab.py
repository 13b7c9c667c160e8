"""Tests of ``routeledger ab`` on logs written by a real runtime and on hand-written logs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from routeledger import ABTestConfig, FailoverConfig, HealthConfig, Runtime, RuntimeConfig, replay
from routeledger._cmd_ab import ABStatsFold
from routeledger.cli import main
from routeledger.events import (
    ABMetricsRecorded,
    ABTestCreated,
    ABVariantAssigned,
    AttemptSucceeded,
    Event,
    RouteledgerError,
)
from routeledger.sim import Simulation, scenario_from_dict
from routeledger.store import SQLiteStore
from routeledger.testing import Behaviour, FakeProvider

T0 = 1_700_000_000.0


def write_log(path: Path, events: Sequence[Event]) -> None:
    """Append ``events`` to a new SQLite log at ``path``."""
    store = SQLiteStore(path)
    try:
        store.append(list(events))
    finally:
        store.close()


def run_ab(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``routeledger ab ARGS`` and return its status, stdout and stderr."""
    status = main(["ab", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def runtime_log(
    db: Path,
    config_for: Callable[..., RuntimeConfig],
    req: Callable[..., Any],
) -> Path:
    """Return a log of 120 A/B requests: A on a healthy fake, B on one failing 60 % of calls."""
    with (
        FakeProvider(Behaviour(latency_ms=1), seed=1) as good,
        FakeProvider(Behaviour(latency_ms=1, fail_rate=0.6, fail_status=503), seed=2) as bad,
    ):
        config = config_for(
            {"good": good, "bad": bad},
            failover=FailoverConfig(max_attempts=1),
            # Keep both providers in service: the test is about outcomes, not circuits.
            health=HealthConfig(failure_threshold=10_000, window_size=10_000, min_calls=10_000),
        )
        with Runtime.start(config, event_log=db) as rt:
            rt.setup_ab_test(ABTestConfig(name="good-vs-bad", variant_a="good", variant_b="bad"))
            for _ in range(120):
                try:
                    rt.complete(req(), ab_test="good-vs-bad")
                except RouteledgerError:
                    pass
    return db


def test_ab_on_a_runtime_log_counts_what_replay_counts_and_finds_the_worse_variant(
    runtime_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON figures match replay's A/B results, and a 60 % error rate loses to 0 %."""
    status, out, _ = run_ab(capsys, "--db", str(runtime_log), "--json")
    assert status == 0
    (comparison,) = json.loads(out)
    replayed = replay(runtime_log).ab_results["good-vs-bad"]
    for figures in comparison["variants"]:
        expected = replayed[figures["variant"]]
        assert figures["provider"] == expected.provider
        assert figures["requests"] == expected.requests
        assert figures["errors"] == expected.errors
        assert figures["latency_mean_ms"] == pytest.approx(expected.mean_latency_ms)
    assert comparison["metric"] == "error_rate"
    assert comparison["verdict"] == "A better"
    low, high = comparison["difference_ci"]
    assert 0 < low <= comparison["difference"] <= high


def test_ab_prints_each_variant_with_intervals_and_the_verdict(
    runtime_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text output names both variants, their intervals, the difference and the verdict."""
    status, out, _ = run_ab(capsys, "--db", str(runtime_log), "--test", "good-vs-bad")
    assert status == 0
    assert "A/B test good-vs-bad: metric error_rate" in out
    assert "  A good: " in out and "  B bad: " in out
    assert "difference B - A:" in out and "always-valid 95% interval" in out
    assert "verdict: A better on error_rate (always-valid p " in out


def make_test_log(path: Path, *, provider_b: str = "b", ttfts: tuple[float, float]) -> None:
    """Write a log of 40 requests per variant whose successful attempts report a ttft."""
    events: list[Event] = [
        ABTestCreated(ts=T0, name="t", variant_a="a", variant_b=provider_b, split_ratio=0.5)
    ]
    for i in range(80):
        variant = "AB"[i % 2]
        rid = f"r{i}"
        provider = "a" if variant == "A" else provider_b
        ts = T0 + i
        events += [
            ABVariantAssigned(
                ts=ts, test="t", variant=variant, provider=provider, probability=0.5, request_id=rid
            ),
            AttemptSucceeded(
                ts=ts,
                request_id=rid,
                attempt=1,
                provider=provider,
                model="m",
                latency_ms=100.0,
                ttft_ms=ttfts[i % 2] + i % 5,
                output_tokens=10,
                stream=True,
            ),
            ABMetricsRecorded(
                ts=ts,
                test="t",
                variant=variant,
                latency_ms=100.0 + i % 3,
                cost=0.001,
                request_id=rid,
                source="auto",
            ),
        ]
    write_log(path, events)


def test_the_ttft_metric_is_read_from_each_request_s_successful_attempt(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--metric ttft compares the attempts' time to first token, matched by request id."""
    make_test_log(db, ttfts=(20.0, 40.0))
    status, out, _ = run_ab(capsys, "--db", str(db), "--metric", "ttft", "--json")
    assert status == 0
    (comparison,) = json.loads(out)
    a, b = comparison["variants"]
    assert a["metric"] == pytest.approx(22.0)
    assert b["metric"] == pytest.approx(42.0)
    assert a["metric_requests"] == b["metric_requests"] == 40
    assert comparison["verdict"] == "A better"


def test_provider_names_are_escaped_for_the_terminal(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider name with terminal controls is printed with visible escapes."""
    make_test_log(db, provider_b="evil\x1b[31m\u202e", ttfts=(20.0, 20.0))
    status, out, _ = run_ab(capsys, "--db", str(db))
    assert status == 0
    assert "\x1b" not in out and "\u202e" not in out
    assert "B evil\\x1b[31m\\u202e:" in out


def test_a_test_set_up_again_differently_starts_afresh(db: Path) -> None:
    """As in the A/B projection, a changed definition drops the earlier outcomes."""
    fold = ABStatsFold()
    created = ABTestCreated(ts=T0, name="t", variant_a="a", variant_b="b", split_ratio=0.5)
    outcome = ABMetricsRecorded(ts=T0, test="t", variant="A", latency_ms=1.0)
    for i, event in enumerate([created, outcome, created, outcome]):
        fold.apply(i + 1, event)
    assert fold.tests["t"].variants["A"].requests == 2
    fold.apply(5, ABTestCreated(ts=T0, name="t", variant_a="a", variant_b="c", split_ratio=0.5))
    assert fold.tests["t"].variants["A"].requests == 0
    assert fold.tests["t"].variants["B"].provider == "c"


def test_an_unknown_test_is_a_clear_error(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--test NAME for a test not in the log exits 2 and lists the tests there are."""
    make_test_log(db, ttfts=(1.0, 1.0))
    status, _, err = run_ab(capsys, "--db", str(db), "--test", "nope")
    assert status == 2
    assert "unknown A/B test 'nope' (tests in the log: t)" in err


def test_a_missing_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --db that does not exist exits 2 without creating it."""
    status, _, err = run_ab(capsys, "--db", str(tmp_path / "none.sqlite"))
    assert status == 2
    assert "no event log" in err
    assert not (tmp_path / "none.sqlite").exists()


def simulated_ab_log(path: Path, *, slow_ms: float, requests: int = 800) -> None:
    """Simulate ``requests`` requests under an A/B test of "fast" (50 ms) against "slow"."""
    scenario = scenario_from_dict(
        {
            "simulation": {"requests": 1, "rate_per_s": 40.0, "model": "m"},
            "failover": {"max_attempts": 1},
            "ab_tests": [{"name": "t", "variant_a": "fast", "variant_b": "slow"}],
            "providers": [
                {
                    "name": name,
                    "models": [{"name": "m", "input_per_mtok": 0.5, "output_per_mtok": 1.5}],
                    "sim": {"latency_ms": latency, "fail_rate": 0.02},
                }
                for name, latency in (("fast", 50.0), ("slow", slow_ms))
            ],
        }
    )
    store = SQLiteStore(path)
    try:
        sim = Simulation(scenario, seed=1, store=store)
        for i in range(requests):
            request = sim.make_request(1000 + i)
            sim.at(1.0 + i / 40, functools.partial(sim.submit, request, ab_test="t"))
        sim.run()
    finally:
        store.close()


def test_ab_on_a_simulated_log_finds_the_slower_variant(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a simulation where B is 60 % slower, --metric latency declares A better."""
    simulated_ab_log(db, slow_ms=80.0)
    status, out, _ = run_ab(capsys, "--db", str(db), "--metric", "latency", "--json")
    assert status == 0
    (comparison,) = json.loads(out)
    replayed = replay(db).ab_results["t"]
    assert [v["requests"] for v in comparison["variants"]] == [
        replayed["A"].requests,
        replayed["B"].requests,
    ]
    assert comparison["winner"] == "A"
    assert 20 < comparison["difference"] < 40


def test_ab_on_a_simulated_aa_log_declares_no_winner(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When both variants behave alike, neither latency nor errors get a verdict."""
    simulated_ab_log(db, slow_ms=50.0)
    for metric in ("latency", "error_rate"):
        status, out, _ = run_ab(capsys, "--db", str(db), "--metric", metric, "--json")
        assert status == 0
        (comparison,) = json.loads(out)
        assert comparison["verdict"] == "not yet significant", metric
        assert comparison["winner"] is None
