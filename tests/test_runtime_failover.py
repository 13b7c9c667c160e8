"""End-to-end failover: which errors move to another provider, bounds, deadline, callbacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from routeledger import (
    AllProvidersFailed,
    BadRequest,
    ContextLengthExceeded,
    DeadlineExceeded,
    Runtime,
    VirtualClock,
)
from routeledger.testing import Behaviour, FakeProvider, no_backoff

Fakes = Callable[..., list[FakeProvider]]


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (Behaviour(status=429), "RateLimited"),
        (Behaviour(status=500), "ProviderUnavailable"),
        (Behaviour(status=502), "ProviderUnavailable"),
        (Behaviour(status=503), "ProviderUnavailable"),
        (Behaviour(status=529), "ProviderUnavailable"),
        (Behaviour(latency_ms=3000), "ProviderTimeout"),
        (None, "ProviderConnectError"),
    ],
    ids=["429", "500", "502", "503", "529", "read-timeout", "connect-refused"],
)
def test_retryable_errors_fail_over_to_the_next_provider(
    fakes: Fakes,
    config_for: Any,
    req: Any,
    db: Path,
    events: Any,
    refused_url: str,
    behaviour: Behaviour | None,
    error: str,
) -> None:
    """Each retryable failure of the first provider moves the request to the second one."""
    first: FakeProvider | str = refused_url if behaviour is None else fakes(1, behaviour)[0]
    (second,) = fakes(1)
    cfg = config_for(
        {"first": first, "second": second},
        per_provider={"first": {"priority": 10, "timeout_s": 0.3}},
        failover=no_backoff(),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        response = rt.complete(req())
        rt.flush()
    assert response.provider == "second"
    assert response.attempts == 2
    [failed] = events(db, "attempt.failed", request_id=response.request_id)
    assert (failed.provider, failed.error, failed.retryable) == ("first", error, True)
    [fallback] = events(db, "fallback.succeeded", request_id=response.request_id)
    assert fallback.failed_providers == ["first"]


def test_retry_after_is_honoured_when_it_fits(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A 429 with a fitting Retry-After is retried on the same provider after that wait."""
    (limited,) = fakes(1, Behaviour(status=429, retry_after="2"))
    cfg = config_for(
        {"limited": limited},
        failover=no_backoff(max_attempts=2, max_attempts_per_provider=2),
    )
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        with pytest.raises(AllProvidersFailed) as info:
            rt.complete(req())
        rt.flush()
    assert clock.monotonic() >= 2.0  # the retry waited the provider's Retry-After
    assert [e.retry_after_s for e in info.value.attempts] == [2.0, 2.0]
    assert limited.stats.requests == 2


def test_retry_after_too_long_rules_the_provider_out(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A Retry-After beyond ``max_retry_after_s`` is not waited for: the other provider serves."""
    (limited,) = fakes(1, Behaviour(status=429, retry_after="120"))
    (other,) = fakes(1)
    cfg = config_for(
        {"limited": limited, "other": other},
        per_provider={"limited": {"priority": 10}},
        failover=no_backoff(max_attempts_per_provider=2, max_retry_after_s=30.0),
    )
    clock = VirtualClock()
    with Runtime.start(cfg, event_log=db, clock=clock, active_health_checks=False) as rt:
        response = rt.complete(req())
    assert response.provider == "other"
    assert limited.stats.requests == 1
    assert clock.monotonic() < 1.0


@pytest.mark.parametrize(
    ("behaviour", "error_type"),
    [
        (Behaviour(status=400), BadRequest),
        (Behaviour(error_code="context_length_exceeded"), ContextLengthExceeded),
    ],
    ids=["400", "context-length"],
)
def test_bad_request_is_not_failed_over(
    fakes: Fakes,
    config_for: Any,
    req: Any,
    db: Path,
    events: Any,
    behaviour: Behaviour,
    error_type: type[Exception],
) -> None:
    """A request the provider rejects is final: the caller sees it, after one attempt only."""
    (rejecting,) = fakes(1, behaviour)
    (other,) = fakes(1)
    cfg = config_for(
        {"rejecting": rejecting, "other": other}, per_provider={"rejecting": {"priority": 10}}
    )
    with Runtime.start(cfg, event_log=db) as rt:
        request = req()
        with pytest.raises(error_type) as info:
            rt.complete(request)
        rt.flush()
    assert type(info.value) is error_type
    assert other.stats.requests == 0
    assert len(events(db, "attempt.started", request_id=request.request_id)) == 1
    [failed] = events(db, "request.failed", request_id=request.request_id)
    assert failed.error == error_type.__name__ and failed.attempts == 1
    assert events(db, "fallback.exhausted") == []


def test_auth_error_fails_over_but_is_never_retried_on_the_same_provider(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A 401 rules its provider out for the request; another provider may still serve it."""
    (unauthorised,) = fakes(1, Behaviour(error_code="invalid_api_key"))
    (other,) = fakes(1)
    cfg = config_for(
        {"unauthorised": unauthorised, "other": other},
        per_provider={"unauthorised": {"priority": 10}},
        failover=no_backoff(max_attempts=3, max_attempts_per_provider=3),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        response = rt.complete(req())
    assert response.provider == "other"
    assert response.attempts == 2
    assert unauthorised.stats.requests == 1


def test_auth_error_alone_is_tried_once(fakes: Fakes, config_for: Any, req: Any, db: Path) -> None:
    """With only an unauthorised provider, the request fails after exactly one attempt."""
    (unauthorised,) = fakes(1, Behaviour(status=401))
    cfg = config_for(
        {"unauthorised": unauthorised},
        failover=no_backoff(max_attempts=3, max_attempts_per_provider=3),
    )
    with Runtime.start(cfg, event_log=db) as rt, pytest.raises(AllProvidersFailed) as info:
        rt.complete(req())
    assert [type(e).__name__ for e in info.value.attempts] == ["AuthenticationError"]
    assert unauthorised.stats.requests == 1


def test_attempts_are_bounded_by_max_attempts(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """However many providers fail, a request makes at most ``max_attempts`` attempts."""
    failing = fakes(4, Behaviour(status=503))
    cfg = config_for(
        {f"p{i}": f for i, f in enumerate(failing)},
        failover=no_backoff(max_attempts=2),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        request = req()
        with pytest.raises(AllProvidersFailed) as info:
            rt.complete(request)
        rt.flush()
    assert len(info.value.attempts) == 2
    assert sum(f.stats.requests for f in failing) == 2
    [exhausted] = events(db, "fallback.exhausted", request_id=request.request_id)
    assert exhausted.attempts == 2 and len(exhausted.providers) == 2


def test_deadline_bounds_the_whole_request(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A request's deadline cuts a slow attempt short and ends the request with DeadlineExceeded."""
    slow = fakes(2, Behaviour(latency_ms=2000))
    cfg = config_for({"a": slow[0], "b": slow[1]}, failover=no_backoff())
    with Runtime.start(cfg, event_log=db) as rt:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            rt.complete(req(deadline=0.3))
        elapsed = time.monotonic() - start
        assert rt.get_active_requests() == {"a": 0, "b": 0}
    assert elapsed < 1.5
    assert slow[0].stats.requests + slow[1].stats.requests == 1


def test_fallback_and_complete_callbacks_fire(
    fakes: Fakes, config_for: Any, req: Any, db: Path, collector: Any
) -> None:
    """``fallback_success``, ``fallback_exhausted`` and ``complete`` callbacks run once each."""
    (bad,) = fakes(1, Behaviour(status=503))
    (good,) = fakes(1)
    cfg = config_for(
        {"bad": bad, "good": good},
        per_provider={"bad": {"priority": 10}},
        failover=no_backoff(),
    )
    succeeded, exhausted, completed = collector(), collector(), collector()
    with Runtime.start(cfg, event_log=db) as rt:
        rt.on("fallback_success", succeeded)
        rt.on("fallback_exhausted", exhausted)
        rt.on("complete", completed)
        response = rt.complete(req())
        good.set_behaviour(Behaviour(status=503))
        failing = req()
        with pytest.raises(AllProvidersFailed):
            rt.complete(failing)
        [s] = succeeded.wait(1)
        [e] = exhausted.wait(1)
        [c] = completed.wait(1)
    assert s.request_id == response.request_id and s.failed_providers == ["bad"]
    assert e.request_id == failing.request_id and sorted(e.providers) == ["bad", "good"]
    assert c.request_id == response.request_id and c.provider == "good"
