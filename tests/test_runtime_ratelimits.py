"""End to end on loopback fake providers that enforce their own rpm: the runtime's buckets keep
a steady rate below the limits free of 429s, and the providers' headers correct them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from routeledger import Runtime
from routeledger.testing import Behaviour, FakeProvider

Fakes = Callable[..., list[FakeProvider]]


@pytest.fixture
def fake_rpm() -> Iterator[FakeProvider]:
    """Return a running fake provider that enforces its own limit of 3 requests a minute."""
    fake = FakeProvider(Behaviour(latency_ms=0, rpm=3))
    fake.start()
    yield fake
    fake.stop()


def test_the_fake_provider_refuses_requests_over_its_own_rpm(fake_rpm: FakeProvider) -> None:
    """The fake's own limit answers 429 past its rpm and says what is left in its headers."""
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=fake_rpm.url) as client:
        answers = [client.post("/v1/chat/completions", json=body) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "2"
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"


def test_a_steady_rate_below_the_configured_limits_gets_no_429(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """Round-robin over a provider limited to 5 rpm: its sixth request goes elsewhere, no 429."""
    (capped,) = fakes(1, Behaviour(latency_ms=1, rpm=5))
    (spare,) = fakes(1)
    cfg = config_for({"capped": capped, "spare": spare}, per_provider={"capped": {"rpm": 5}})
    with Runtime.start(cfg, event_log=db) as rt:
        served = [rt.complete(req()).provider for _ in range(14)]
        rt.flush()
    assert served.count("capped") == 5
    assert capped.stats.statuses[429] == 0
    assert events(db, "attempt.failed") == []
    skipped = [e for e in events(db, "route.decided") if "capped" in e.excluded]
    assert skipped and all(e.excluded["capped"].startswith("rate limit: rpm 5") for e in skipped)


def test_without_the_limit_configured_the_same_traffic_draws_429s(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """The same traffic with no rpm configured: the fake provider refuses some (the control)."""
    (capped,) = fakes(1, Behaviour(latency_ms=1, rpm=5))
    (spare,) = fakes(1)
    cfg = config_for({"capped": capped, "spare": spare})
    with Runtime.start(cfg, event_log=db) as rt:
        for _ in range(14):
            rt.complete(req())
    assert capped.stats.statuses[429] > 0


def test_the_providers_headers_correct_the_runtimes_estimate(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A provider whose own limit (3) is below the configured one (50) is believed: no 429."""
    (capped,) = fakes(1, Behaviour(latency_ms=1, rpm=3))
    (spare,) = fakes(1)
    cfg = config_for({"capped": capped, "spare": spare}, per_provider={"capped": {"rpm": 50}})
    with Runtime.start(cfg, event_log=db) as rt:
        served = [rt.complete(req()).provider for _ in range(10)]
    assert capped.stats.statuses[429] == 0
    assert served.count("capped") == 3


def test_a_restarted_runtime_continues_its_buckets_from_the_log(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """The minute's requests recorded before a restart still count: no fresh burst, no 429."""
    (capped,) = fakes(1, Behaviour(latency_ms=1, rpm=4))
    (spare,) = fakes(1)
    cfg = config_for(
        {"capped": capped, "spare": spare},
        per_provider={"capped": {"rpm": 4, "priority": 10}},
    )
    with Runtime.start(cfg, event_log=db) as rt:
        first = [rt.complete(req()).provider for _ in range(4)]
    with Runtime.start(cfg, event_log=db) as rt:
        again = rt.complete(req())
        rt.flush()
    assert first == ["capped"] * 4
    assert again.provider == "spare"
    assert capped.stats.statuses[429] == 0
    [decided] = events(db, "route.decided", request_id=again.request_id)
    assert decided.excluded["capped"].startswith("rate limit: rpm 4 reached")
