"""End-to-end routing: every strategy, the decision's reason, and the candidate filters."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from routeledger import (
    ConfigError,
    CostConfig,
    HealthConfig,
    NoCapableProvider,
    Requirements,
    Runtime,
    VirtualClock,
)
from routeledger.testing import Behaviour, FakeProvider, no_backoff

Fakes = Callable[..., list[FakeProvider]]


# -- strategies ---------------------------------------------------------------------------


def test_round_robin_rotates_within_the_top_tier(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Round-robin alternates over the highest priority tier and never uses a lower one."""
    a, b, c = fakes(3)
    cfg = config_for(
        {"a": a, "b": b, "c": c},
        per_provider={"a": {"priority": 10}, "b": {"priority": 10}, "c": {"priority": 0}},
    )
    with Runtime.start(cfg, event_log=db) as rt:
        chosen = [rt.complete(req()).provider for _ in range(6)]
    assert chosen == ["a", "b", "a", "b", "a", "b"]
    assert (a.stats.requests, b.stats.requests, c.stats.requests) == (3, 3, 0)


def test_round_robin_uses_a_lower_tier_only_when_the_top_tier_is_unavailable(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """When every top-tier provider fails, the request fails over to the lower tier."""
    a, b = fakes(2, Behaviour(status=503))
    (c,) = fakes(1)
    cfg = config_for(
        {"a": a, "b": b, "c": c},
        per_provider={"a": {"priority": 10}, "b": {"priority": 10}, "c": {"priority": 0}},
        failover=no_backoff(),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        response = rt.complete(req())
        excluded = rt.route_request(req(), Requirements(exclude_providers=["a", "b"]))
    assert response.provider == "c"
    assert response.attempts == 3
    assert excluded.provider == "c"


def test_set_provider_priority_takes_effect_at_once(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Raising a provider's priority moves every following request to it, and is an event."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b}, per_provider={"a": {"priority": 10}})
    with Runtime.start(cfg, event_log=db) as rt:
        before = [rt.complete(req()).provider for _ in range(3)]
        rt.set_provider_priority("b", 20)
        after = [rt.complete(req()).provider for _ in range(3)]
        assert rt.get_provider("b").priority == 20
        rt.flush()
    assert before == ["a"] * 3
    assert after == ["b"] * 3
    [changed] = events(db, "provider.priority_changed")
    assert (changed.provider, changed.old, changed.new) == ("b", 0, 20)


def test_least_loaded_sends_the_next_request_to_the_idle_provider(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Least-loaded measures requests in flight: while one provider is busy, the idle one wins."""
    (slow,) = fakes(1, Behaviour(latency_ms=400))
    (idle,) = fakes(1)
    cfg = config_for({"slow": slow, "idle": idle}, strategy="least-loaded")
    with Runtime.start(cfg, event_log=db) as rt:
        holders = [
            threading.Thread(
                target=rt.complete, args=(req(),), kwargs={"preferred_provider": "slow"}
            )
            for _ in range(2)
        ]
        for t in holders:
            t.start()
        wait_for(lambda: rt.get_active_requests("slow") == 2)
        route = rt.route_request(req())
        picked = [rt.complete(req()).provider for _ in range(3)]
        for t in holders:
            t.join(timeout=5)
    assert route.provider == "idle"
    assert "0/10 in flight" in route.reason
    assert picked == ["idle"] * 3
    assert route.scores["slow"] < route.scores["idle"]


def test_latency_explores_unmeasured_then_prefers_the_faster(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any
) -> None:
    """Latency routing tries each unmeasured provider once, then sends traffic to the fastest."""
    (slow,) = fakes(1, Behaviour(latency_ms=60))
    (fast,) = fakes(1, Behaviour(latency_ms=1))
    cfg = config_for({"slow": slow, "fast": fast}, strategy="latency")
    with Runtime.start(cfg, event_log=db) as rt:
        first = rt.route_request(req())
        explored = set()
        for _ in range(2):
            explored.add(rt.complete(req()).provider)
            settled(rt)
        later = [rt.complete(req()).provider for _ in range(5)]
        route = rt.route_request(req())
    assert "exploring unmeasured" in first.reason
    assert explored == {"slow", "fast"}
    assert later == ["fast"] * 5
    assert route.provider == "fast" and "fastest of 2" in route.reason
    assert slow.stats.requests == 1


@pytest.mark.parametrize("status", [429, 500])
def test_latency_penalises_a_provider_that_fails_fast(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any, status: int
) -> None:
    """A provider that answers errors instantly is not mistaken for a fast one."""
    (failing,) = fakes(1, Behaviour(status=status))
    (ok,) = fakes(1, Behaviour(latency_ms=20))
    cfg = config_for(
        {"failing": failing, "ok": ok},
        strategy="latency",
        failover=no_backoff(),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        for _ in range(2):  # each provider gets explored once
            assert rt.complete(req()).provider == "ok"
            settled(rt)
        routes = [rt.route_request(req()).provider for _ in range(5)]
    assert failing.stats.requests == 1
    assert routes == ["ok"] * 5


def test_cost_prefers_the_cheapest_and_never_treats_unpriced_as_free(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Cost routing picks the cheapest priced provider; an unpriced one ranks after priced ones."""
    free, cheap, pricey = fakes(3)
    cfg = config_for(
        {"unpriced": free, "cheap": cheap, "pricey": pricey},
        strategy="cost",
        per_provider={
            "unpriced": {"input_per_mtok": None, "output_per_mtok": None},
            "pricey": {"input_per_mtok": 10.0, "output_per_mtok": 20.0},
        },
    )
    with Runtime.start(cfg, event_log=db) as rt:
        picked = [rt.complete(req()).provider for _ in range(3)]
        without_cheap = rt.route_request(req(), Requirements(exclude_providers=["cheap"]))
        estimates = rt.estimate_cost(req())
    assert picked == ["cheap"] * 3
    assert without_cheap.provider == "pricey"
    assert without_cheap.alternatives == ["unpriced"]
    assert estimates["unpriced"].cost is None
    assert estimates["cheap"].cost is not None and estimates["pricey"].cost is not None
    assert estimates["cheap"].cost < estimates["pricey"].cost


def test_max_cost_excludes_unpriced_and_too_expensive(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """``Requirements(max_cost=...)`` drops unpriced and over-budget providers, with the reason."""
    free, cheap, pricey = fakes(3)
    cfg = config_for(
        {"unpriced": free, "cheap": cheap, "pricey": pricey},
        strategy="round-robin",
        per_provider={
            "unpriced": {"input_per_mtok": None, "output_per_mtok": None, "priority": 10},
            "pricey": {"input_per_mtok": 10.0, "output_per_mtok": 20.0, "priority": 10},
        },
    )
    with Runtime.start(cfg, event_log=db) as rt:
        route = rt.route_request(req(), Requirements(max_cost=1e-4))
        with pytest.raises(NoCapableProvider) as info:
            rt.route_request(req(), Requirements(max_cost=1e-9))
        rt.flush()
    assert route.provider == "cheap"
    assert route.excluded["unpriced"] == "unpriced under a cost limit"
    assert route.excluded["pricey"].startswith("estimated cost")
    assert set(info.value.excluded) == {"unpriced", "cheap", "pricey"}
    decided = events(db, "route.decided")
    assert decided[0].excluded == route.excluded
    assert decided[1].chosen is None


def test_cost_config_max_cost_per_request_applies(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """``CostConfig.max_cost_per_request`` limits every request that sets no limit of its own."""
    cheap, pricey = fakes(2)
    cfg = config_for(
        {"pricey": pricey, "cheap": cheap},
        per_provider={"pricey": {"input_per_mtok": 10.0, "output_per_mtok": 20.0, "priority": 5}},
        cost=CostConfig(max_cost_per_request=1e-4),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        picked = {rt.complete(req()).provider for _ in range(3)}
        own_limit = rt.route_request(req(), Requirements(max_cost=1.0))
    assert picked == {"cheap"}
    assert pricey.stats.requests == 0
    assert own_limit.provider == "pricey"


def test_weighted_follows_the_weights(fakes: Fakes, config_for: Any, req: Any, db: Path) -> None:
    """Smooth weighted round-robin sends traffic in proportion to the weights, evenly."""
    a, b = fakes(2)
    cfg = config_for(
        {"a": a, "b": b},
        strategy="weighted",
        per_provider={"a": {"weight": 3.0}, "b": {"weight": 1.0}},
    )
    with Runtime.start(cfg, event_log=db) as rt:
        picked = [rt.complete(req()).provider for _ in range(8)]
    assert Counter(picked) == {"a": 6, "b": 2}
    # smooth: never more than three of "a" in a row
    assert "aaaa" not in "".join(picked)


def test_route_result_is_derived_from_the_decision(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Reason, confidence and alternatives change with the situation; they are not constants."""
    a, b, c = fakes(3)
    cfg = config_for(
        {"a": a, "b": b, "c": c},
        per_provider={"a": {"priority": 10}, "b": {"priority": 10}},
    )
    with Runtime.start(cfg, event_log=db) as rt:
        tie = rt.route_request(req())
        preferred = rt.route_request(req(), Requirements(preferred_providers=["c"]))
        alone = rt.route_request(req(), Requirements(exclude_providers=["a", "b"]))
    assert tie.provider in ("a", "b")
    assert tie.alternatives[-1] == "c" and len(tie.alternatives) == 2
    assert 0.3 < tie.confidence < 0.5  # two top-tier candidates and one lower
    assert preferred.provider == "c" and preferred.reason.startswith("preferred provider 'c'")
    assert alone.provider == "c" and alone.confidence == 1.0 and alone.alternatives == []
    assert len({tie.reason, preferred.reason, alone.reason}) == 3


# -- filters ------------------------------------------------------------------------------


def test_required_capabilities_filter_providers(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Only providers with every required capability are candidates; the event says why."""
    plain, rich = fakes(2)
    cfg = config_for(
        {"plain": plain, "rich": rich},
        per_provider={
            "plain": {"capabilities": frozenset({"streaming"}), "priority": 10},
            "rich": {"capabilities": frozenset({"streaming", "tools", "vision"})},
        },
    )
    with Runtime.start(cfg, event_log=db) as rt:
        for cap in ("tools", "vision"):
            route = rt.route_request(req(), Requirements(require_capabilities=frozenset({cap})))
            assert route.provider == "rich"
            assert route.excluded == {"plain": f"lacks {cap}"}
        assert rt.route_request(req()).provider == "plain"
        assert rt.route_request(req(stream=True)).provider == "plain"
        with pytest.raises(NoCapableProvider, match="lacks audio"):
            rt.route_request(req(), Requirements(require_capabilities=frozenset({"audio"})))
        with pytest.raises(ConfigError, match="telepathy"):
            rt.route_request(req(), Requirements(require_capabilities=frozenset({"telepathy"})))
        response = rt.complete(req(), requirements=Requirements(require_capabilities={"tools"}))
        rt.flush()
    assert response.provider == "rich"
    decided = events(db, "route.decided", request_id=response.request_id)
    assert decided[0].excluded == {"plain": "lacks tools"}


def test_preferred_and_excluded_providers(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A preferred provider goes first, an excluded one never serves."""
    a, b, c = fakes(3)
    cfg = config_for({"a": a, "b": b, "c": c}, per_provider={"a": {"priority": 10}})
    with Runtime.start(cfg, event_log=db) as rt:
        assert rt.complete(req(), preferred_provider="c").provider == "c"
        chosen = rt.complete(req(), requirements=Requirements(preferred_providers=["b", "c"]))
        assert chosen.provider == "b"
        excluded = [
            rt.complete(req(), requirements=Requirements(exclude_providers=["a"])).provider
            for _ in range(4)
        ]
    assert "a" not in excluded and set(excluded) == {"b", "c"}
    assert a.stats.requests == 0


def test_preferred_provider_is_skipped_while_its_circuit_is_open(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any, events: Any
) -> None:
    """A preferred provider whose circuit is open is not used; the event names the filter."""
    (bad,) = fakes(1, Behaviour(status=500))
    (good,) = fakes(1)
    cfg = config_for(
        {"bad": bad, "good": good},
        health=HealthConfig(failure_threshold=1, cooldown_s=30.0),
        failover=no_backoff(),
    )
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        assert rt.complete(req(), preferred_provider="bad").provider == "good"
        settled(rt)
        bad.set_behaviour(Behaviour())
        again = rt.complete(req(), preferred_provider="bad")
        also = rt.complete(req(), requirements=Requirements(preferred_providers=["bad"]))
        rt.flush()
    assert again.provider == "good" and also.provider == "good"
    assert bad.stats.requests == 1
    [decided] = events(db, "route.decided", request_id=again.request_id)
    assert decided.excluded == {"bad": "circuit open"}


def test_max_latency_filters_on_observed_latency(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any
) -> None:
    """``max_latency_ms`` drops providers whose observed latency is over it; unmeasured stay."""
    (slow,) = fakes(1, Behaviour(latency_ms=80))
    (fast,) = fakes(1)
    (new,) = fakes(1)
    cfg = config_for({"slow": slow, "fast": fast, "new": new})
    with Runtime.start(cfg, event_log=db) as rt:
        rt.complete(req(), preferred_provider="slow")
        rt.complete(req(), preferred_provider="fast")
        settled(rt)
        route = rt.route_request(req(), Requirements(max_latency_ms=40))
    assert route.excluded.keys() == {"slow"}
    assert route.excluded["slow"].startswith("observed latency")
    assert set([route.provider, *route.alternatives]) == {"fast", "new"}


@pytest.mark.parametrize(
    "requirements",
    [Requirements(max_cost=-1.0), Requirements(max_latency_ms=0.0)],
    ids=["negative-cost", "zero-latency"],
)
def test_nonsensical_requirements_are_request_errors(
    fakes: Fakes, config_for: Any, req: Any, db: Path, requirements: Requirements
) -> None:
    """A negative cost limit or a non-positive latency limit is refused before any call."""
    from routeledger import RequestError

    (a,) = fakes(1, Behaviour())
    with Runtime.start(config_for({"a": a}), event_log=db) as rt:
        with pytest.raises(RequestError):
            rt.complete(req(), requirements=requirements)
        with pytest.raises(RequestError):
            rt.route_request(req(), requirements)
    assert a.stats.requests == 0
