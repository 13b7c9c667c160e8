"""End-to-end health on a virtual clock: circuits, callbacks, panic routing, probes."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from routeledger import (
    AllProvidersUnhealthy,
    BadRequest,
    FailoverConfig,
    HealthConfig,
    Runtime,
    VirtualClock,
)
from routeledger.testing import Behaviour, FakeProvider, no_backoff

Fakes = Callable[..., list[FakeProvider]]
COMPLETIONS = "/v1/chat/completions"


def test_circuit_opens_then_recovers_through_a_half_open_probe(
    fakes: Fakes,
    config_for: Any,
    req: Any,
    db: Path,
    events: Any,
    settled: Any,
    collector: Any,
) -> None:
    """Failures open the circuit once; after the cooldown one probe closes it, once."""
    (bad,) = fakes(1, Behaviour(status=500))
    (good,) = fakes(1)
    cfg = config_for(
        {"bad": bad, "good": good},
        per_provider={"bad": {"priority": 10}},
        health=HealthConfig(failure_threshold=3, cooldown_s=30.0),
        failover=no_backoff(),
    )
    clock = VirtualClock()
    unhealthy, recovered = collector(), collector()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        rt.on("provider_unhealthy", unhealthy)
        rt.on("provider_recovered", recovered)
        for _ in range(3):
            assert rt.complete(req()).provider == "good"
            settled(rt)
        assert rt.get_provider_health()["bad"].state == "open"
        assert not rt.get_provider_health()["bad"].healthy
        for _ in range(3):  # the open circuit keeps traffic away
            assert rt.complete(req()).provider == "good"
        settled(rt)
        assert bad.stats.requests == 3

        bad.set_behaviour(Behaviour())
        clock.advance(29.0)
        rt.tick()
        assert rt.complete(req()).provider == "good"  # still cooling down
        clock.advance(2.0)
        rt.tick()
        settled(rt)
        assert rt.get_provider_health()["bad"].state == "half_open"
        probe = rt.complete(req())
        settled(rt)
        health = rt.get_provider_health()["bad"]
        after = [rt.complete(req()).provider for _ in range(2)]
        [u] = unhealthy.wait(1)
        [r] = recovered.wait(1)
    assert probe.provider == "bad"
    assert health.healthy and health.state == "closed"
    assert after == ["bad", "bad"]
    assert u.provider == "bad" and r.provider == "bad"
    assert len(events(db, "provider.unhealthy")) == 1
    assert len(events(db, "provider.recovered")) == 1
    states = [(e.from_state, e.to_state) for e in events(db, "circuit.state_changed")]
    assert states == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert len(unhealthy.items) == 1 and len(recovered.items) == 1


def test_bad_requests_do_not_count_against_health(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any
) -> None:
    """400-class errors are the caller's fault: the circuit stays closed however many there are."""
    (a,) = fakes(1, Behaviour(status=400))
    cfg = config_for({"a": a}, health=HealthConfig(failure_threshold=2))
    with Runtime.start(cfg, event_log=db, clock=VirtualClock(), active_health_checks=False) as rt:
        for _ in range(5):
            with pytest.raises(BadRequest):
                rt.complete(req())
        settled(rt)
        health = rt.get_provider_health()["a"]
    assert health.healthy and health.state == "closed"
    assert health.consecutive_failures == 0
    assert a.stats.requests == 5


def test_every_provider_unhealthy_fails_fast(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any
) -> None:
    """When every circuit is open, a request fails at once naming each provider's state."""
    a, b = fakes(2, Behaviour(status=503))
    cfg = config_for(
        {"a": a, "b": b}, health=HealthConfig(failure_threshold=1), failover=no_backoff()
    )
    with Runtime.start(cfg, event_log=db, clock=VirtualClock(), active_health_checks=False) as rt:
        with pytest.raises(Exception):  # noqa: B017 - the attempts failed; what matters is next
            rt.complete(req())
        settled(rt)
        with pytest.raises(AllProvidersUnhealthy) as info:
            rt.complete(req())
    assert info.value.states == {"a": "open", "b": "open"}
    assert "a=open" in str(info.value) and "b=open" in str(info.value)
    assert a.stats.requests + b.stats.requests == 2


def test_panic_routing_uses_unhealthy_providers_when_all_are_down(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any, events: Any
) -> None:
    """With ``panic_routing``, a request still goes out when every circuit is open."""
    (a,) = fakes(1, Behaviour(status=503))
    cfg = config_for(
        {"a": a},
        health=HealthConfig(failure_threshold=1, panic_routing=True),
        failover=FailoverConfig(max_attempts=1),
    )
    with Runtime.start(cfg, event_log=db, clock=VirtualClock(), active_health_checks=False) as rt:
        with pytest.raises(Exception):  # noqa: B017 - the first failure only opens the circuit
            rt.complete(req())
        settled(rt)
        assert rt.get_provider_health()["a"].state == "open"
        a.set_behaviour(Behaviour())
        response = rt.complete(req())
        rt.flush()
    assert response.provider == "a"
    [decided] = events(db, "route.decided", request_id=response.request_id)
    assert decided.reason.startswith("panic routing")


def test_health_check_uses_the_free_probe(
    fakes: Fakes, config_for: Any, db: Path, refused_url: str, events: Any
) -> None:
    """``health_check`` lists models (GET /models), never sends a billed completion."""
    (up,) = fakes(1)
    cfg = config_for({"up": up, "down": refused_url})
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        results = rt.health_check()
        rt.flush()
    assert results["up"].healthy and results["up"].error is None
    assert not results["down"].healthy and "ProviderConnectError" in (results["down"].error or "")
    assert up.stats.by_path.get("/v1/models") == 1
    assert up.stats.by_path.get(COMPLETIONS, 0) == 0
    probed = {e.provider: e.healthy for e in events(db, "health.probed")}
    assert probed == {"up": True, "down": False}


def test_active_probes_run_on_the_injected_clock(
    fakes: Fakes, config_for: Any, db: Path, settled: Any
) -> None:
    """Active checks probe every ``interval_s`` of the injected clock, with the free probe."""
    (a,) = fakes(1)
    cfg = config_for({"a": a}, health=HealthConfig(interval_s=10.0))
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=True) as rt:
        rt.tick()
        settled(rt)
        assert a.stats.by_path.get("/v1/models", 0) == 0
        clock.advance(10.0)
        rt.tick()
        settled(rt)
        rt.tick()
    assert a.stats.by_path.get("/v1/models") == 1
    assert a.stats.by_path.get(COMPLETIONS, 0) == 0


def test_get_provider_health_reports_each_provider(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any
) -> None:
    """``get_provider_health`` gives every provider's state and failure counts."""
    (ok,) = fakes(1)
    (flaky,) = fakes(1, Behaviour(status=500))
    cfg = config_for(
        {"ok": ok, "flaky": flaky},
        per_provider={"flaky": {"priority": 10}},
        health=HealthConfig(failure_threshold=5),
        failover=no_backoff(),
    )
    with Runtime.start(cfg, event_log=db, clock=VirtualClock(), active_health_checks=False) as rt:
        rt.complete(req())
        rt.complete(req())
        settled(rt)
        health = rt.get_provider_health()
    assert set(health) == {"ok", "flaky"}
    assert health["ok"].healthy and health["ok"].state == "closed"
    assert health["flaky"].healthy and health["flaky"].consecutive_failures == 2
    assert health["flaky"].last_error == "ProviderUnavailable"


def test_a_half_open_circuit_lets_only_its_probes_through(
    fakes: Fakes, config_for: Any, req: Any, db: Path, settled: Any
) -> None:
    """While the half-open probe is in flight, other requests go elsewhere."""
    (bad,) = fakes(1, Behaviour(status=500))
    (good,) = fakes(1)
    cfg = config_for(
        {"bad": bad, "good": good},
        per_provider={"bad": {"priority": 10}},
        health=HealthConfig(failure_threshold=1, cooldown_s=10.0, half_open_probes=1),
        failover=no_backoff(),
    )
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        rt.complete(req())
        settled(rt)
        bad.set_behaviour(Behaviour(latency_ms=300))
        bad.reset_stats()
        clock.advance(11.0)
        rt.tick()
        settled(rt)
        with ThreadPoolExecutor(1) as pool:
            probe = pool.submit(rt.complete, req())
            wait_for(lambda: rt.get_active_requests("bad") == 1)
            others = [rt.complete(req()).provider for _ in range(3)]
            assert probe.result(timeout=5).provider == "bad"
    assert others == ["good"] * 3
    assert bad.stats.requests == 1
