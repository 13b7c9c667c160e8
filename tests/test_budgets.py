"""Spend budgets: the fold, configuration, and routing end to end against loopback fakes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from routeledger import (
    BudgetConfig,
    BudgetExceeded,
    ConfigError,
    LogConfig,
    RouteledgerError,
    Runtime,
    RuntimeConfig,
    VirtualClock,
    replay,
)
from routeledger.events import (
    AttemptSucceeded,
    BudgetLimitReached,
    BudgetProjection,
    BudgetReset,
    ConfigurationApplied,
    RequestCompleted,
    RequestReceived,
    period_start,
)
from routeledger.testing import Behaviour, FakeProvider

Fakes = Callable[..., list[FakeProvider]]
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _applied(*budgets: BudgetConfig, ts: float = T0) -> ConfigurationApplied:
    import msgspec

    return ConfigurationApplied(
        ts=ts,
        config_version=1,
        digest="d",
        providers=["a", "b"],
        strategy="round-robin",
        summary={"budgets": msgspec.to_builtins(list(budgets))},
    )


def _success(rid: str, cost: float | None, *, provider: str = "a", ts: float = T0) -> Any:
    return AttemptSucceeded(
        ts=ts,
        request_id=rid,
        attempt=1,
        provider=provider,
        model="m",
        latency_ms=1.0,
        cost=cost,
    )


# -- the fold ---------------------------------------------------------------------------------


def test_period_start_is_the_utc_calendar_hour_day_and_month() -> None:
    """Periods start on UTC calendar boundaries."""
    assert period_start("hour", T0) == 1_699_999_200.0  # 22:00
    assert period_start("day", T0) == 1_699_920_000.0  # 2023-11-14T00:00Z
    assert period_start("month", T0) == 1_698_796_800.0  # 2023-11-01T00:00Z


def test_the_fold_counts_each_attempts_cost_on_the_budgets_covering_it() -> None:
    """Cost counts on the budgets whose provider, model and tag match; unpriced counts nothing."""
    fold = BudgetProjection()
    fold.apply(
        1,
        _applied(
            BudgetConfig(name="all", limit=1.0),
            BudgetConfig(name="a", limit=1.0, provider="a"),
            BudgetConfig(name="search", limit=1.0, tag="team=search"),
            BudgetConfig(name="team", limit=1.0, tag="team"),
        ),
    )
    fold.apply(2, RequestReceived(ts=T0, request_id="r1", model="m", metadata={"team": "search"}))
    fold.apply(3, RequestReceived(ts=T0, request_id="r2", model="m", metadata={"team": "ads"}))
    fold.apply(4, _success("r1", 0.25, provider="a"))
    fold.apply(5, _success("r2", 0.5, provider="b"))
    fold.apply(6, _success("r3", None, provider="a"))
    spent = {name: fold.spent(name, T0) for name in fold.budgets}
    assert spent == {"all": 0.75, "a": 0.25, "search": 0.25, "team": 0.75}


def test_a_new_period_starts_from_nothing_and_a_changed_budget_too() -> None:
    """Spend of an earlier period does not count; a redefined budget starts again."""
    fold = BudgetProjection()
    fold.apply(1, _applied(BudgetConfig(name="h", limit=1.0, period="hour")))
    fold.apply(2, _success("r1", 0.5))
    assert fold.spent("h", T0 + 3600) == 0.0
    fold.apply(3, _success("r2", 0.25, ts=T0 + 3600))
    assert fold.spent("h", T0 + 3600) == 0.25
    fold.apply(4, _applied(BudgetConfig(name="h", limit=1.0, period="hour"), ts=T0 + 3600))
    assert fold.spent("h", T0 + 3600) == 0.25  # the same definition keeps its spend
    fold.apply(5, _applied(BudgetConfig(name="h", limit=2.0, period="hour"), ts=T0 + 3600))
    assert fold.spent("h", T0 + 3600) == 0.0


def test_the_fold_state_round_trips_and_forgets_ended_requests_tags() -> None:
    """A fold continued from its state equals the original; ended requests' tags are dropped."""
    fold = BudgetProjection()
    fold.apply(1, _applied(BudgetConfig(name="t", limit=1.0, tag="team")))
    fold.apply(2, RequestReceived(ts=T0, request_id="r1", model="m", metadata={"team": "x"}))
    fold.apply(3, _success("r1", 0.5))
    fold.apply(
        4,
        BudgetLimitReached(ts=T0, budget="t", period="day", period_start=T0, limit=1.0, spent=1.0),
    )
    assert BudgetProjection.from_state(fold.state()).state() == fold.state()
    assert fold.budgets["t"].exceeded_start == T0
    fold.apply(
        5,
        RequestCompleted(
            ts=T0, request_id="r1", provider="a", model="m", attempts=1, latency_ms=1.0
        ),
    )
    fold.apply(6, BudgetReset(ts=T0, budget="t", period="day", period_start=T0))
    assert fold.tags == {} and fold.budgets["t"].exceeded_start is None


# -- configuration ----------------------------------------------------------------------------


def test_budget_configuration_problems_are_listed_at_once() -> None:
    """Every wrong budget field is reported in one ConfigError."""
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig.from_dict(
            {
                "providers": [
                    {
                        "name": "a",
                        "kind": "openai",
                        "base_url": "http://127.0.0.1:1/v1",
                        "models": [{"name": "fake-model"}],
                    }
                ],
                "budgets": [
                    {"name": "x", "limit": 0.0, "period": "week", "on_exceeded": "shrug"},
                    {"name": "x", "limit": 1.0, "provider": "nope", "model": "gone", "tag": "=v"},
                    {"name": "y", "limit": 1.0, "prefer_below": 1.5},
                ],
            }
        )
    text = "\n".join(caught.value.problems)
    for needle in (
        "budgets[0] ('x').limit must be > 0",
        "unknown period 'week'",
        "on_exceeded 'shrug' is unknown",
        "budgets[1] ('x'): duplicate budget name",
        "unknown provider 'nope'",
        "no provider serves model 'gone'",
        "tag must be a metadata key or key=value",
        "budgets[2] ('y').prefer_below must be in (0, 1]",
    ):
        assert needle in text, needle


def test_budgets_load_from_toml(tmp_path: Path) -> None:
    """A [[budgets]] table in TOML becomes a BudgetConfig."""
    path = tmp_path / "rl.toml"
    path.write_text(
        """
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
models = [{ name = "m", input_per_mtok = 1.0, output_per_mtok = 2.0 }]

[[budgets]]
name = "search-daily"
limit = 5.0
period = "day"
tag = "team=search"
on_exceeded = "other_providers"
"""
    )
    config = RuntimeConfig.from_toml(path)
    assert config.budgets == [
        BudgetConfig(
            name="search-daily",
            limit=5.0,
            period="day",
            tag="team=search",
            on_exceeded="other_providers",
        )
    ]


# -- routing, end to end ----------------------------------------------------------------------


def _one_cost(fakes: Fakes, config_for: Any, req: Any, tmp_path: Path) -> float:
    """Return what one request costs on a fake (the same for every request of ``req()``)."""
    (fake,) = fakes(1)
    with Runtime.start(config_for({"a": fake}), event_log=tmp_path / "probe.sqlite") as rt:
        cost = rt.complete(req()).cost
    assert cost is not None and cost > 0
    return cost


def test_a_refusing_budget_refuses_once_its_limit_is_reached_and_says_so_once(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any, tmp_path: Path
) -> None:
    """Past its limit a budget refuses with BudgetExceeded, and budget.exceeded is recorded once."""
    cost = _one_cost(fakes, config_for, req, tmp_path)
    a, b = fakes(2)
    budget = BudgetConfig(name="daily", limit=cost * 2.5)
    clock = VirtualClock()
    cfg = config_for({"a": a, "b": b}, budgets=[budget])
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        served = [rt.complete(req()) for _ in range(3)]
        for _ in range(2):
            with pytest.raises(BudgetExceeded) as caught:
                rt.complete(req())
        [status] = rt.get_budgets()
        rt.flush()
    assert isinstance(caught.value, RouteledgerError) and caught.value.budgets == ["daily"]
    assert len(served) == 3
    assert status.spent == pytest.approx(cost * 3) and status.exceeded
    assert status.spent <= budget.limit + cost  # over by at most one request's cost
    [reached] = events(db, "budget.exceeded")
    assert reached.budget == "daily" and reached.spent == pytest.approx(cost * 3)
    [refused, _] = [e for e in events(db, "route.decided") if e.chosen is None]
    assert refused.reason.startswith("refused: spend budget 'daily' exceeded (")
    assert [s.spent for s in replay(db).budgets.status(clock.time())] == [status.spent]


def test_an_other_providers_budget_moves_traffic_off_the_provider_it_covers(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any, tmp_path: Path
) -> None:
    """A provider over its own budget is left out (reason recorded); the others serve."""
    cost = _one_cost(fakes, config_for, req, tmp_path)
    a, b = fakes(2)
    budget = BudgetConfig(
        name="a-cap", limit=cost * 1.5, provider="a", on_exceeded="other_providers"
    )
    cfg = config_for({"a": a, "b": b}, per_provider={"a": {"priority": 10}}, budgets=[budget])
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        chosen = [rt.complete(req()).provider for _ in range(5)]
        rt.flush()
    assert chosen == ["a", "a", "b", "b", "b"]
    last = events(db, "route.decided")[-1]
    assert last.excluded["a"].startswith("budget 'a-cap' exceeded")


def test_a_budget_nearing_its_limit_ranks_its_providers_after_the_others(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any, tmp_path: Path
) -> None:
    """From prefer_below of the limit on, providers within budget are preferred."""
    cost = _one_cost(fakes, config_for, req, tmp_path)
    a, b = fakes(2)
    budget = BudgetConfig(name="a-cap", limit=cost * 10, provider="a", prefer_below=0.2)
    cfg = config_for({"a": a, "b": b}, per_provider={"a": {"priority": 10}}, budgets=[budget])
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        chosen = [rt.complete(req()).provider for _ in range(4)]
        rt.flush()
    assert chosen == ["a", "a", "b", "b"]
    reason = events(db, "route.decided")[-1].reason
    assert "'a' is near budget 'a-cap', 'b' within" in reason


def test_a_tag_budget_refuses_only_the_requests_with_its_tag(
    fakes: Fakes, config_for: Any, req: Any, db: Path, tmp_path: Path
) -> None:
    """A budget scoped to team=search leaves other teams' requests alone."""
    cost = _one_cost(fakes, config_for, req, tmp_path)
    (a,) = fakes(1)
    budget = BudgetConfig(name="search", limit=cost * 0.5, tag="team=search")
    cfg = config_for({"a": a}, budgets=[budget])
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        rt.complete(req(metadata={"team": "search"}))
        with pytest.raises(BudgetExceeded):
            rt.complete(req(metadata={"team": "search"}))
        assert rt.complete(req(metadata={"team": "ads"})).provider == "a"
        assert rt.complete(req()).provider == "a"


def test_spend_survives_a_restart_and_a_new_period_resets_it(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any, tmp_path: Path
) -> None:
    """A restarted runtime refuses from its log's spend; the next hour records budget.reset."""
    cost = _one_cost(fakes, config_for, req, tmp_path)
    (a,) = fakes(1)
    budget = BudgetConfig(name="hourly", limit=cost * 0.5, period="hour")
    cfg = config_for({"a": a}, budgets=[budget], log=LogConfig(snapshot_every=5))
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        rt.complete(req())
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        with pytest.raises(BudgetExceeded):
            rt.complete(req())
        clock.advance(3600)
        assert rt.complete(req()).provider == "a"
        [status] = rt.get_budgets()
        rt.flush()
    assert status.spent == pytest.approx(cost)
    assert len(events(db, "budget.exceeded")) == 2  # one per hour
    [reset] = events(db, "budget.reset")
    assert reset.period_start == period_start("hour", clock.time())
    from_snapshot = replay(db)
    assert from_snapshot.snapshot_position > 0
    assert from_snapshot.budgets.state() == replay(db, snapshots=False).budgets.state()
    [replayed] = from_snapshot.budgets.status()
    assert replayed.spent == pytest.approx(cost)
    assert replayed.period_start == period_start("hour", clock.time())


def test_concurrent_requests_overshoot_a_budget_by_at_most_one_requests_cost(
    fakes: Fakes, config_for: Any, req: Any, db: Path, tmp_path: Path
) -> None:
    """Reservations at decision time keep concurrent spend within one request of the limit."""
    cost = _one_cost(fakes, config_for, req, tmp_path)
    (a,) = fakes(1, Behaviour(latency_ms=30))
    budget = BudgetConfig(name="cap", limit=cost * 3.5)
    cfg = config_for({"a": a}, budgets=[budget], per_provider={"a": {"max_concurrency": 16}})
    served: list[float] = []
    lock = threading.Lock()
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:

        def worker() -> None:
            for _ in range(3):
                try:
                    response = rt.complete(req())
                except BudgetExceeded:
                    return
                with lock:
                    served.append(response.cost or 0.0)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        [status] = rt.get_budgets()
    assert len(served) == 4  # 3.5 requests' worth admits the fourth, never a fifth
    assert status.spent == pytest.approx(sum(served))
    assert status.spent <= budget.limit + cost


def test_a_runtime_without_budgets_records_no_budget_in_its_configuration(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Unused, budgets and fallbacks leave the recorded configuration as it was."""
    (a,) = fakes(1)
    with Runtime.start(config_for({"a": a}), event_log=db, active_health_checks=False) as rt:
        rt.complete(req())
        assert rt.get_budgets() == []
        rt.flush()
    [applied] = events(db, "config.applied")
    assert "budgets" not in applied.summary and "fallbacks" not in applied.summary


def test_a_budget_counts_the_spend_of_every_runtime_sharing_the_log(
    fakes: Fakes, config_for: Any, req: Any, db: Path, tmp_path: Path
) -> None:
    """One runtime spends the budget; another on the same log then refuses."""
    from support import wait_for

    cost = _one_cost(fakes, config_for, req, tmp_path)
    (a,) = fakes(1)
    budget = BudgetConfig(name="shared", limit=cost * 1.5)
    cfg = config_for({"a": a}, budgets=[budget])
    with (
        Runtime.start(cfg, event_log=db, active_health_checks=False) as one,
        Runtime.start(cfg, event_log=db, active_health_checks=False) as two,
    ):
        one.complete(req())
        one.complete(req())
        for rt in (one, two, one, two):
            rt.flush()
        wait_for(lambda: two.get_budgets()[0].exceeded, "two to fold one's spend")
        with pytest.raises(BudgetExceeded):
            two.complete(req())
        assert two.get_budgets()[0].spent == pytest.approx(cost * 2)
