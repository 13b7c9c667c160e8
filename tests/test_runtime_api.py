"""End-to-end API: pools, A/B tests, caching, supervision, async, live == replay, secrets."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from routeledger import (
    ABTestConfig,
    AllProvidersFailed,
    CacheConfig,
    FailoverConfig,
    PoolConfig,
    Requirements,
    Runtime,
    VirtualClock,
    replay,
)
from routeledger.actors._provider import default_adapter_factory
from routeledger.testing import Behaviour, FakeProvider, no_backoff

Fakes = Callable[..., list[FakeProvider]]
CANARY = "sk-canary-5f0c1d9e7b"


# -- pools --------------------------------------------------------------------------------


def test_weighted_pool_uses_its_weights(fakes: Fakes, config_for: Any, req: Any, db: Path) -> None:
    """A weighted pool picks members in proportion to the pool's own weights."""
    a, b, c = fakes(3)
    cfg = config_for({"a": a, "b": b, "c": c})
    with Runtime.start(cfg, event_log=db) as rt:
        rt.create_pool(
            PoolConfig(
                name="p", providers=["a", "b"], strategy="weighted", weights={"a": 1.0, "b": 3.0}
            )
        )
        picks = Counter(rt.get_from_pool("p") for _ in range(8))
        served = Counter(rt.complete(req(), pool="p").provider for _ in range(8))
    assert picks == {"a": 2, "b": 6}
    assert served == {"a": 2, "b": 6}
    assert c.stats.requests == 0


def test_round_robin_pool_rotates_over_its_members(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A round-robin pool rotates deterministically over its members only; creation is logged."""
    a, b, c = fakes(3)
    cfg = config_for({"a": a, "b": b, "c": c})
    with Runtime.start(cfg, event_log=db) as rt:
        rt.create_pool(PoolConfig(name="bc", providers=["b", "c"]))
        picks = [rt.get_from_pool("bc", req()) for _ in range(4)]
        rt.flush()
    assert picks == ["b", "c", "b", "c"]
    [created] = events(db, "pool.created")
    assert created.name == "bc" and created.providers == ["b", "c"]


# -- A/B tests ----------------------------------------------------------------------------


def test_ab_assignment_reports_variant_and_provider(
    fakes: Fakes, config_for: Any, db: Path, events: Any
) -> None:
    """Each assignment says which variant and provider, with its probability in the event."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b})
    with Runtime.start(cfg, event_log=db) as rt:
        rt.setup_ab_test(ABTestConfig(name="t", variant_a="a", variant_b="b", split_ratio=0.3))
        assignments = [rt.get_for_ab_test("t") for _ in range(400)]
        sticky = {rt.get_for_ab_test("t", key="user-7").variant for _ in range(20)}
        rt.flush()
    for x in assignments:
        assert x.provider == ("a" if x.variant == "A" else "b")
        assert x.probability == pytest.approx(0.3 if x.variant == "A" else 0.7)
    share_a = sum(x.variant == "A" for x in assignments) / len(assignments)
    assert 0.22 < share_a < 0.38
    assert len(sticky) == 1
    logged = events(db, "ab.variant_assigned")
    assert len(logged) == 420
    assert {(e.variant, e.probability) for e in logged} == {("A", 0.3), ("B", 0.7)}


def test_ab_results_combine_auto_and_manual_metrics_and_equal_replay(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Requests routed under a test record metrics; manual ones add; live equals replay."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b})
    with Runtime.start(cfg, event_log=db) as rt:
        rt.setup_ab_test(ABTestConfig(name="t", variant_a="a", variant_b="b"))
        served = [rt.complete(req(), ab_test="t").provider for _ in range(10)]
        rt.record_ab_test_metrics("t", "A", latency_ms=100.0, cost=0.5)
        rt.record_ab_test_metrics("t", "B", latency_ms=50.0, error=True)
        live = rt.get_ab_test_results("t")
        rt.flush()
    assert a.stats.requests + b.stats.requests == 10
    assert live["A"].requests == served.count("a") + 1
    assert live["B"].requests == served.count("b") + 1
    assert live["B"].errors == 1 and live["A"].errors == 0
    assert live["A"].provider == "a" and live["B"].provider == "b"
    assert replay(db).ab.results("t") == live


# -- caching ------------------------------------------------------------------------------


def test_cache_serves_identical_requests_only(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """An identical request is served from cache; another temperature or provider misses."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b}, cache=CacheConfig(enabled=True, ttl_s=60.0))
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        first = rt.complete(req(temperature=0.0), preferred_provider="a")
        hit = rt.complete(req(temperature=0.0), preferred_provider="a")
        assert a.stats.requests == 1
        other_temp = rt.complete(req(temperature=0.7), preferred_provider="a")
        other_provider = rt.complete(req(temperature=0.0), preferred_provider="b")
        assert a.stats.requests == 2 and b.stats.requests == 1
        clock.advance(61.0)
        expired = rt.complete(req(temperature=0.0), preferred_provider="a")
        assert a.stats.requests == 3
        rt.clear_cache()
        cleared = rt.complete(req(temperature=0.0), preferred_provider="a")
        assert a.stats.requests == 4
    assert not first.cached and hit.cached
    assert hit.content == first.content and hit.request_id != first.request_id
    assert not other_temp.cached and not other_provider.cached
    assert other_provider.provider == "b"
    assert not expired.cached and not cleared.cached


# -- supervision --------------------------------------------------------------------------


def test_a_crashed_provider_actor_is_restarted(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A provider actor that dies is restarted (an event says so) and serves again."""
    (a,) = fakes(1)
    cfg = config_for({"a": a})
    with Runtime.start(cfg, event_log=db) as rt:
        old = rt._handles["a"].actor_ref
        old.tell(object())  # an unknown message: the tell handler raises and the actor dies
        wait_for(lambda: (r := rt._handles["a"].actor_ref) is not old and r.is_alive())
        wait_for(lambda: rt._handles["a"].wire is not None)
        response = rt.complete(req())
        rt.flush()
    assert response.provider == "a"
    [restarted] = events(db, "provider.restarted")
    assert restarted.provider == "a" and restarted.restarts == 1
    assert "TypeError" in restarted.reason


def test_a_provider_crashing_past_the_restart_limit_is_disabled(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A provider whose actor keeps dying is disabled with the reason; routing avoids it."""
    broken, good = fakes(2)

    def factory(config: Any, api_key: Any) -> Any:
        if config.name == "broken":
            raise RuntimeError("cannot build the client")
        return default_adapter_factory(config, api_key)

    cfg = config_for({"broken": broken, "good": good}, per_provider={"broken": {"priority": 10}})
    with Runtime.start(cfg, event_log=db, adapter_factory=factory) as rt:
        wait_for(lambda: rt.get_provider_health()["broken"].state == "disabled")
        served = [rt.complete(req()).provider for _ in range(3)]
        assert rt.find_capable_providers("fake-model") == ["good"]
        rt.flush()
    assert served == ["good"] * 3
    assert broken.stats.requests == 0
    assert len(events(db, "provider.restarted", provider="broken")) == 3
    [disabled] = events(db, "provider.disabled")
    assert disabled.provider == "broken" and "cannot build the client" in disabled.reason


# -- async --------------------------------------------------------------------------------


def test_acomplete_does_not_block_the_event_loop(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """While 100 ``acomplete`` calls wait on a slow provider, the event loop keeps ticking."""
    (a,) = fakes(1, Behaviour(latency_ms=50))
    cfg = config_for({"a": a}, per_provider={"a": {"max_concurrency": 100}})

    async def run(rt: Runtime) -> tuple[int, list[Any]]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        responses = await asyncio.gather(*(rt.acomplete(req()) for _ in range(100)))
        done.set()
        await task
        return ticks, responses

    with Runtime.start(cfg, event_log=db, max_workers=64) as rt:
        start = time.monotonic()
        ticks, responses = asyncio.run(run(rt))
        elapsed = time.monotonic() - start
    assert len(responses) == 100 and all(r.provider == "a" for r in responses)
    # 100 calls of 50 ms on 64 workers take at least two rounds (~100 ms); a blocked loop
    # would tick only a handful of times.
    assert elapsed >= 0.09
    assert ticks >= 20


# -- live equals replay -------------------------------------------------------------------


def test_live_figures_equal_the_replayed_log(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """After a mixed workload, metrics, usage and A/B results equal a replay of the file."""
    (ok,) = fakes(1)
    (flaky,) = fakes(1, Behaviour(fail_rate=0.4, fail_status=503))
    (free,) = fakes(1)
    cfg = config_for(
        {"ok": ok, "flaky": flaky, "free": free},
        per_provider={"free": {"input_per_mtok": None, "output_per_mtok": None}},
        failover=no_backoff(),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        rt.setup_ab_test(ABTestConfig(name="t", variant_a="ok", variant_b="flaky"))
        for i in range(30):
            try:
                if i % 3 == 0:
                    list(rt.stream(req()))
                elif i % 3 == 1:
                    rt.complete(req(), ab_test="t")
                else:
                    rt.complete(req(), requirements=Requirements(exclude_providers=["ok"]))
            except AllProvidersFailed:
                pass
        rt.record_ab_test_metrics("t", "A", latency_ms=12.0, cost=0.01)
        rt.flush()
        metrics = rt.get_metrics()
        usage = rt.get_usage("all")
        ab = rt.get_ab_test_results("t")
    replayed = replay(db)
    assert metrics == replayed.metrics.snapshot()
    assert usage == replayed.usage.report("all")
    assert ab == replayed.ab.results("t")
    assert sum(m.requests for m in metrics.values()) >= 30
    assert metrics["flaky"].failures > 0
    assert metrics["free"].unpriced_requests > 0


# -- secrets ------------------------------------------------------------------------------


def test_an_api_key_never_leaks(
    fakes: Fakes,
    config_for: Any,
    req: Any,
    db: Path,
    caplog: pytest.LogCaptureFixture,
    refused_url: str,
) -> None:
    """The key reaches the provider but never the log file, the logs, reprs or exceptions."""
    (a,) = fakes(1, Behaviour(error_code="invalid_api_key"))
    cfg = config_for(
        {"a": a, "refused": refused_url},
        per_provider={"a": {"api_key": CANARY}, "refused": {"api_key": CANARY}},
        failover=no_backoff(),
    )
    caplog.set_level(logging.DEBUG)
    with Runtime.start(cfg, event_log=db) as rt:
        with pytest.raises(AllProvidersFailed) as info:
            rt.complete(req())
        texts = [str(info.value), repr(info.value), repr(rt.config), repr(rt.get_provider("a"))]
        texts += [f"{e!s} {e!r}" for e in info.value.attempts]
        rt.health_check()
        rt.flush()
    assert a.stats.last_request_headers.get("authorization") == f"Bearer {CANARY}"
    for text in texts:
        assert CANARY not in text
    assert CANARY not in caplog.text
    for path in db.parent.iterdir():
        assert CANARY.encode() not in path.read_bytes(), path.name


def test_a_request_waiting_for_capacity_keeps_its_ab_variant(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A request under an A/B test is assigned once, even if it waits for capacity."""
    a, b = fakes(2, Behaviour(latency_ms=150))
    cfg = config_for(
        {"a": a, "b": b},
        per_provider={"a": {"max_concurrency": 1}, "b": {"max_concurrency": 1}},
        failover=FailoverConfig(queue_timeout_s=3.0),
    )
    with Runtime.start(cfg, event_log=db) as rt, ThreadPoolExecutor(6) as pool:
        rt.setup_ab_test(ABTestConfig(name="t", variant_a="a", variant_b="b"))
        list(pool.map(lambda _: rt.complete(req(), ab_test="t"), range(6)))
        rt.flush()
    assigned = Counter(e.request_id for e in events(db, "ab.variant_assigned"))
    assert len(assigned) == 6 and set(assigned.values()) == {1}


def test_a_cached_answer_is_not_counted_as_an_ab_outcome(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A/B results count routed requests only; a cache hit is not credited to a variant."""
    a, b = fakes(2)
    cfg = config_for({"a": a, "b": b}, cache=CacheConfig(enabled=True))
    with Runtime.start(cfg, event_log=db) as rt:
        rt.setup_ab_test(ABTestConfig(name="t", variant_a="a", variant_b="b", split_ratio=0.0))
        first = rt.complete(req(), ab_test="t")
        hits = [rt.complete(req(), ab_test="t") for _ in range(3)]
        results = rt.get_ab_test_results("t")
    assert first.provider == "b" and all(h.cached for h in hits)
    assert results["B"].requests == 1
    assert results["A"].requests == 0


def test_a_restarted_provider_is_routed_to_again(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """Routes decided while a provider was restarting do not keep it out once it is back."""
    a, b = fakes(2)
    gate = threading.Event()
    builds: Counter[str] = Counter()

    def factory(config: Any, api_key: Any) -> Any:
        builds[config.name] += 1
        if config.name == "a" and builds["a"] == 2:
            gate.wait(5)  # the restarted actor starts slowly
        return default_adapter_factory(config, api_key)

    cfg = config_for({"a": a, "b": b}, per_provider={"a": {"priority": 10}})
    with Runtime.start(cfg, event_log=db, adapter_factory=factory) as rt:
        assert rt.complete(req()).provider == "a"
        old = rt._handles["a"].actor_ref
        old.tell(object())
        wait_for(lambda: builds["a"] == 2)
        during = rt.complete(req())
        gate.set()
        wait_for(lambda: rt._handles["a"].wire is not None)
        after = [rt.complete(req()).provider for _ in range(2)]
    assert during.provider == "b"
    assert during.attempts == 1  # "a" was not tried while it had no running actor
    assert after == ["a", "a"]
