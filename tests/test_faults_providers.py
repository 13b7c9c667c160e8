"""Fault catalogue, providers: each provider fault end to end through a real Runtime.

Every case checks the error the caller sees, the events the log holds for the request, and
that the log stays whole: what was flushed before the fault is still there, positions gapless.
"""

from __future__ import annotations

import email.utils
import itertools
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from routeledger import (
    AllProvidersFailed,
    AllProvidersSaturated,
    AuthenticationError,
    BadRequest,
    FailoverConfig,
    HealthConfig,
    Message,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Request,
    Runtime,
    RuntimeConfig,
    StreamInterrupted,
    VirtualClock,
)
from routeledger.actors._circuit import LEGAL
from routeledger.actors._provider import PING
from routeledger.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    CircuitStateChanged,
    FallbackExhausted,
    FallbackSucceeded,
    ProviderRecovered,
    ProviderUnhealthy,
    RequestCompleted,
    RequestFailed,
    RouteDecided,
)
from routeledger.store import SQLiteStore, StoredEvent
from routeledger.testing import Behaviour, FakeProvider, no_backoff

MODEL = "fake-model"
WAIT_S = 10.0


@pytest.fixture
def fakes() -> Iterator[list[FakeProvider]]:
    """Start two healthy fake providers (``a`` then ``b``); both stop at teardown."""
    started = [FakeProvider(Behaviour(), seed=0).start(), FakeProvider(Behaviour(), seed=0).start()]
    yield started
    for fake in started:
        fake.stop()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Return the path of a fresh event log."""
    return tmp_path / "events.sqlite"


# --- helpers --------------------------------------------------------------------------------


def provider(name: str, target: FakeProvider | str, **kwargs: Any) -> ProviderConfig:
    """Return a provider on a fake (or a base URL) serving ``fake-model``."""
    url = target if isinstance(target, str) else target.url + "/v1"
    kwargs.setdefault("kind", "openai")
    kwargs.setdefault("timeout_s", 5.0)
    return ProviderConfig(
        name=name,
        base_url=url,
        models=[ModelSpec(name=MODEL, input_per_mtok=1.0, output_per_mtok=2.0)],
        **kwargs,
    )


def failover(**kwargs: Any) -> FailoverConfig:
    """Return a fast failover policy (no backoff, a retry budget that never binds)."""
    kwargs.setdefault("max_attempts", 3)
    kwargs.setdefault("retry_budget_min", 1000)
    return no_backoff(**kwargs)


HEALTH = HealthConfig(
    failure_threshold=2, min_calls=2, window_size=4, cooldown_s=1.0, max_cooldown_s=8.0
)


def start(
    db: Path,
    *providers: ProviderConfig,
    clock: VirtualClock | None = None,
    **runtime: Any,
) -> Runtime:
    """Start a runtime on a virtual clock, without active probes (they would hit the fakes)."""
    runtime.setdefault("failover", failover())
    runtime.setdefault("health", HEALTH)
    config = RuntimeConfig(providers=list(providers), seed=0, **runtime)
    return Runtime.start(
        config, event_log=db, clock=clock or VirtualClock(), active_health_checks=False
    )


def request(**kwargs: Any) -> Request:
    """Return a one-message request (with max_tokens, which the Anthropic format needs)."""
    kwargs.setdefault("max_tokens", 8)
    return Request(model=MODEL, messages=[Message(role="user", content="hello")], **kwargs)


def read(db: Path) -> list[StoredEvent]:
    """Return every committed event of the log."""
    store = SQLiteStore(db, readonly=True)
    try:
        return list(store.read())
    finally:
        store.close()


def of_request(db: Path, request_id: str) -> list[Any]:
    """Return the events of one request, in order."""
    store = SQLiteStore(db, readonly=True)
    try:
        return [s.event for s in store.read_request(request_id)]
    finally:
        store.close()


def only(events: list[Any], cls: type[Any], **fields: Any) -> list[Any]:
    """Return the events of class ``cls`` whose fields equal ``fields``."""
    return [
        e
        for e in events
        if isinstance(e, cls) and all(getattr(e, k) == v for k, v in fields.items())
    ]


def settle(rt: Runtime) -> None:
    """Wait until every outcome told so far went through the health actor into the log."""
    for handle in rt._handles.values():
        if handle.actor_ref is not None:
            handle.actor_ref.ask(PING, timeout=WAIT_S)
    rt.get_provider_health()
    rt.flush()


class Ledger:
    """Remembers what the log held when last flushed, and checks nothing of it was lost."""

    def __init__(self, rt: Runtime, db: Path) -> None:
        self.rt = rt
        self.db = db
        self.acked: list[StoredEvent] = []
        self.ack()

    def ack(self) -> None:
        """Flush and remember every committed event."""
        self.rt.flush()
        self.acked = read(self.db)

    def check(self) -> list[StoredEvent]:
        """Flush; assert the acknowledged events are intact and positions gapless."""
        settle(self.rt)
        now = read(self.db)
        assert [s.position for s in now] == list(range(1, len(now) + 1))
        assert now[: len(self.acked)] == self.acked
        return now


def seed_failing_first(rate: float = 0.5) -> int:
    """Return a fake-provider seed whose first request fails at ``rate`` and second does not."""
    for seed in range(10_000):
        rng = random.Random(seed)
        first = rng.random()
        rng.random()  # the jitter draw
        if first < rate <= rng.random():
            return seed
    raise AssertionError("no such seed")


def closed_port_url() -> str:
    """Return a loopback base URL on which nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [("2", 2.0, 2.0), ("http-date", 1.0, 3.0)],
    ids=["seconds", "http-date"],
)
def test_retry_after_is_honoured_before_retrying_the_same_provider(
    db: Path, header: str, low: float, high: float
) -> None:
    """A 429's Retry-After (seconds or HTTP date) is waited out before the provider's retry."""
    if header == "http-date":
        header = email.utils.formatdate(time.time() + 3, usegmt=True)
    beh = Behaviour(fail_rate=0.5, fail_status=429, retry_after=header)
    clock = VirtualClock()
    with FakeProvider(beh, seed=seed_failing_first()) as fake:
        rt = start(
            db, provider("a", fake), clock=clock, failover=failover(max_attempts_per_provider=2)
        )
        with rt:
            ledger = Ledger(rt, db)
            response = rt.complete(request())
            assert (response.provider, response.attempts) == ("a", 2)
            ledger.check()
        assert fake.stats.requests == 2
    events = of_request(db, response.request_id)
    (failed,) = only(events, AttemptFailed)
    assert failed.error == "RateLimited" and failed.status == 429 and failed.retryable
    assert low <= failed.retry_after_s <= high
    (second,) = only(events, AttemptSucceeded, attempt=2)
    assert second.ts - failed.ts >= failed.retry_after_s  # waited (on the virtual clock)
    assert clock.monotonic() >= failed.retry_after_s
    assert only(events, RequestCompleted, attempts=2)


def test_garbage_retry_after_falls_back_to_backoff(db: Path) -> None:
    """A Retry-After that is neither seconds nor a date is ignored: a short backoff, then retry."""
    beh = Behaviour(fail_rate=0.5, fail_status=429, retry_after="soon-ish, maybe")
    clock = VirtualClock()
    with FakeProvider(beh, seed=seed_failing_first()) as fake:
        rt = start(
            db,
            provider("a", fake),
            clock=clock,
            # A short backoff, so that the bound below proves the backoff was what was waited.
            failover=failover(
                max_attempts_per_provider=2, backoff_base_s=0.001, backoff_max_s=0.01
            ),
        )
        with rt:
            ledger = Ledger(rt, db)
            response = rt.complete(request())
            assert response.attempts == 2
            ledger.check()
    (failed,) = only(of_request(db, response.request_id), AttemptFailed)
    assert failed.error == "RateLimited" and failed.retry_after_s is None
    assert clock.monotonic() <= 0.01  # at most backoff_max_s


def test_huge_retry_after_is_not_waited_for_and_the_request_moves_on(
    db: Path, fakes: list[FakeProvider]
) -> None:
    """A Retry-After beyond max_retry_after_s rules the provider out at once: failover, no wait."""
    a, b = fakes
    a.set_behaviour(Behaviour(status=429, retry_after="86400"))
    clock = VirtualClock()
    rt = start(
        db,
        provider("a", a, priority=10),
        provider("b", b),
        clock=clock,
        failover=failover(max_attempts_per_provider=2),
    )
    with rt:
        ledger = Ledger(rt, db)
        response = rt.complete(request())
        assert (response.provider, response.attempts) == ("b", 2)
        ledger.check()
    assert clock.monotonic() == 0.0
    assert a.stats.requests == 1
    events = of_request(db, response.request_id)
    (failed,) = only(events, AttemptFailed)
    assert (failed.error, failed.retry_after_s) == ("RateLimited", 86400.0)
    assert only(events, FallbackSucceeded, provider="b", failed_providers=["a"])


def test_huge_retry_after_on_the_only_provider_ends_the_request_without_waiting(
    db: Path, fakes: list[FakeProvider]
) -> None:
    """With no other provider, a huge Retry-After ends the request at once (never slept on)."""
    a = fakes[0]
    a.set_behaviour(Behaviour(status=429, retry_after="86400"))
    clock = VirtualClock()
    rt = start(db, provider("a", a), clock=clock, failover=failover(max_attempts_per_provider=2))
    with rt:
        ledger = Ledger(rt, db)
        req = request()
        with pytest.raises(AllProvidersFailed) as info:
            rt.complete(req)
        ledger.check()
    assert clock.monotonic() == 0.0
    assert a.stats.requests == 1
    (only_attempt,) = info.value.attempts
    assert isinstance(only_attempt, RateLimited) and only_attempt.retry_after_s == 86400.0
    assert only(of_request(db, req.request_id), RequestFailed, error="AllProvidersFailed")


# --- errors that allow failover but never a retry on the same provider ----------------------


FAILOVER_ONLY = [
    pytest.param("openai", Behaviour(status=401), AuthenticationError, id="401-openai"),
    pytest.param("anthropic", Behaviour(status=401), AuthenticationError, id="401-anthropic"),
    pytest.param("openai", Behaviour(status=403), AuthenticationError, id="403"),
    pytest.param(
        "openai", Behaviour(error_code="insufficient_quota"), QuotaExceeded, id="quota-openai"
    ),
    pytest.param(
        "anthropic", Behaviour(error_code="insufficient_quota"), QuotaExceeded, id="quota-402"
    ),
    pytest.param("openai", Behaviour(malformed="html"), ProtocolError, id="html"),
    pytest.param("anthropic", Behaviour(malformed="wrong_json"), ProtocolError, id="wrong-json"),
    pytest.param("openai", Behaviour(malformed="not_utf8"), ProtocolError, id="not-utf8"),
    pytest.param(
        "openai", Behaviour(malformed="huge", huge_bytes=1 << 20), ProtocolError, id="huge"
    ),
]


@pytest.mark.parametrize(("kind", "beh", "error"), FAILOVER_ONLY)
def test_failover_only_error_moves_on_and_never_retries_the_provider(
    db: Path, fakes: list[FakeProvider], kind: str, beh: Behaviour, error: type[ProviderError]
) -> None:
    """Auth, quota and protocol errors fail over to the next provider; never the same one again."""
    a, b = fakes
    a.set_behaviour(beh)
    rt = start(
        db,
        provider("a", a, kind=kind, priority=10, max_response_bytes=64 * 1024),
        provider("b", b),
        failover=failover(max_attempts=5, max_attempts_per_provider=3),
    )
    with rt:
        ledger = Ledger(rt, db)
        response = rt.complete(request())
        assert (response.provider, response.attempts) == ("b", 2)
        ledger.check()
    assert a.stats.requests == 1
    events = of_request(db, response.request_id)
    (failed,) = only(events, AttemptFailed)
    assert (failed.provider, failed.error, failed.retryable) == ("a", error.__name__, False)
    assert only(events, AttemptSucceeded, provider="b")
    assert only(events, FallbackSucceeded, provider="b", failed_providers=["a"])


@pytest.mark.parametrize(("kind", "beh", "error"), FAILOVER_ONLY[:5])
def test_failover_only_error_on_the_only_provider_is_one_attempt(
    db: Path, fakes: list[FakeProvider], kind: str, beh: Behaviour, error: type[ProviderError]
) -> None:
    """With no other provider, an auth or quota error ends the request after one attempt."""
    a = fakes[0]
    a.set_behaviour(beh)
    rt = start(db, provider("a", a, kind=kind), failover=failover(max_attempts_per_provider=3))
    with rt:
        ledger = Ledger(rt, db)
        req = request()
        with pytest.raises(AllProvidersFailed) as info:
            rt.complete(req)
        ledger.check()
    assert [type(e) for e in info.value.attempts] == [error]
    assert info.value.attempts[0].provider == "a"
    assert a.stats.requests == 1
    events = of_request(db, req.request_id)
    assert len(only(events, AttemptStarted)) == 1
    assert only(events, RequestFailed, error="AllProvidersFailed", attempts=1)


# --- errors that end the request everywhere -------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("beh", "error"),
    [(Behaviour(status=400), BadRequest)],
    ids=["400"],
)
def test_bad_request_is_final_after_exactly_one_attempt(
    db: Path, fakes: list[FakeProvider], kind: str, beh: Behaviour, error: type[ProviderError]
) -> None:
    """A 400 reaches the caller as is; no provider is tried again (an over-long prompt may
    move to a larger window: tests/test_context_windows.py)."""
    a, b = fakes
    a.set_behaviour(beh)
    rt = start(db, provider("a", a, kind=kind, priority=10), provider("b", b))
    with rt:
        ledger = Ledger(rt, db)
        req = request()
        with pytest.raises(error) as info:
            rt.complete(req)
        assert type(info.value) is error
        assert (info.value.provider, info.value.request_id) == ("a", req.request_id)
        ledger.check()
    assert (a.stats.requests, b.stats.requests) == (1, 0)
    events = of_request(db, req.request_id)
    assert len(only(events, RouteDecided)) == 1
    assert len(only(events, AttemptStarted)) == 1
    (failed,) = only(events, AttemptFailed)
    assert (failed.error, failed.counts_against_health) == (error.__name__, False)
    assert only(events, RequestFailed, error=error.__name__, attempts=1)


# --- transient errors: retried, failed over, and the circuit ---------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 529])
def test_runs_of_server_errors_fail_over_and_open_the_circuit_once(
    db: Path, fakes: list[FakeProvider], status: int
) -> None:
    """5xx/529 answers fail over; after the threshold the circuit opens, reported exactly once."""
    a, b = fakes
    a.set_behaviour(Behaviour(status=status))
    rt = start(db, provider("a", a, priority=10), provider("b", b))
    unhealthy: list[Any] = []
    rt.on("provider_unhealthy", unhealthy.append)
    with rt:
        ledger = Ledger(rt, db)
        for _ in range(2):
            response = rt.complete(request())
            assert (response.provider, response.attempts) == ("b", 2)
        settle(rt)
        assert rt.get_provider_health()["a"].state == "open"
        for _ in range(3):  # a is no longer tried while its circuit is open
            response = rt.complete(request())
            assert (response.provider, response.attempts) == ("b", 1)
        events = [s.event for s in ledger.check()]
    assert a.stats.requests == 2
    failed = only(events, AttemptFailed, provider="a")
    assert {(e.error, e.status, e.retryable, e.maybe_billed) for e in failed} == {
        ("ProviderUnavailable", status, True, True)
    }
    assert len(only(events, ProviderUnhealthy, provider="a")) == 1
    changes = only(events, CircuitStateChanged, provider="a")
    assert [(c.from_state, c.to_state) for c in changes] == [("closed", "open")]
    assert len(only(events, RequestCompleted)) == 5
    wait_for(lambda: len(unhealthy) == 1, "the provider_unhealthy callback")


@pytest.mark.parametrize(
    ("target", "error", "billed"),
    [
        ("refused", ProviderConnectError, False),
        (Behaviour(status=503), ProviderUnavailable, True),
        (Behaviour(reset="before_response"), ProviderUnavailable, True),
        (Behaviour(reset="mid_body"), ProviderUnavailable, True),
        (Behaviour(latency_ms=2000), ProviderTimeout, True),
    ],
    ids=["connect-refused", "503", "reset-before-response", "reset-mid-body", "read-timeout"],
)
def test_retryable_error_is_retried_on_the_same_provider(
    db: Path,
    fakes: list[FakeProvider],
    target: Behaviour | str,
    error: type[ProviderError],
    billed: bool,
) -> None:
    """Transient errors may retry the same provider; maybe_billed says whether it was sent."""
    a = fakes[0]
    if isinstance(target, Behaviour):
        a.set_behaviour(target)
        where: FakeProvider | str = a
    else:
        where = closed_port_url()
    rt = start(
        db, provider("a", where, timeout_s=0.2), failover=failover(max_attempts_per_provider=2)
    )
    with rt:
        ledger = Ledger(rt, db)
        req = request()
        with pytest.raises(AllProvidersFailed) as info:
            rt.complete(req)
        ledger.check()
    assert [type(e) for e in info.value.attempts] == [error, error]
    assert {e.provider for e in info.value.attempts} == {"a"}
    events = of_request(db, req.request_id)
    failed = only(events, AttemptFailed)
    assert [(f.attempt, f.error, f.retryable, f.maybe_billed) for f in failed] == [
        (1, error.__name__, True, billed),
        (2, error.__name__, True, billed),
    ]
    assert only(events, RequestFailed, error="AllProvidersFailed", attempts=2)


@pytest.mark.parametrize(
    ("beh", "error"),
    [
        (None, ProviderConnectError),
        (Behaviour(latency_ms=2000), ProviderTimeout),
        (Behaviour(reset="mid_body"), ProviderUnavailable),
    ],
    ids=["connect-refused", "read-timeout", "reset-mid-body"],
)
def test_transport_failure_fails_over_to_the_next_provider(
    db: Path, fakes: list[FakeProvider], beh: Behaviour | None, error: type[ProviderError]
) -> None:
    """A refused connection, a read timeout or a reset moves the request to the next provider."""
    a, b = fakes
    if beh is not None:
        a.set_behaviour(beh)
    where = a if beh is not None else closed_port_url()
    rt = start(db, provider("a", where, priority=10, timeout_s=0.2), provider("b", b))
    with rt:
        ledger = Ledger(rt, db)
        response = rt.complete(request())
        assert (response.provider, response.attempts) == ("b", 2)
        ledger.check()
    (failed,) = only(of_request(db, response.request_id), AttemptFailed)
    assert (failed.provider, failed.error) == ("a", error.__name__)
    assert failed.maybe_billed is (error is not ProviderConnectError)


# --- streams --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "beh",
    [
        Behaviour(truncate_after_chunks=2),
        Behaviour(error_event_after_chunks=2),
        Behaviour(reset="mid_body"),
        Behaviour(stall_after_chunks=2, stall_ms=2000),
    ],
    ids=["cut-before-terminator", "error-event", "reset-mid-body", "stall"],
)
def test_stream_broken_after_its_first_chunk_is_interrupted_not_rerun(
    db: Path, fakes: list[FakeProvider], kind: str, beh: Behaviour
) -> None:
    """A stream that breaks after a chunk reached the caller raises StreamInterrupted, once."""
    a, b = fakes
    a.set_behaviour(beh)
    rt = start(db, provider("a", a, kind=kind, priority=10, timeout_s=0.3), provider("b", b))
    with rt:
        ledger = Ledger(rt, db)
        req = request()
        received: list[str] = []
        with pytest.raises(StreamInterrupted) as info:
            for chunk in rt.stream(req):
                received.append(chunk.delta)
        assert received, "the caller saw the first chunk"
        assert (info.value.provider, info.value.request_id) == ("a", req.request_id)
        ledger.check()
    assert (a.stats.requests, b.stats.requests) == (1, 0)
    events = of_request(db, req.request_id)
    assert len(only(events, RouteDecided)) == 1
    (failed,) = only(events, AttemptFailed)
    assert (failed.error, failed.maybe_billed, failed.retryable) == (
        "StreamInterrupted",
        True,
        False,
    )
    assert only(events, RequestFailed, error="StreamInterrupted", stream=True, attempts=1)


def test_stream_that_ends_before_its_first_chunk_fails_over(
    db: Path, fakes: list[FakeProvider]
) -> None:
    """Nothing reached the caller yet, so an empty broken stream fails over to the next provider."""
    a, b = fakes
    a.set_behaviour(Behaviour(truncate_after_chunks=0))
    b.set_behaviour(Behaviour(content="from b", output_tokens=2))
    rt = start(db, provider("a", a, priority=10), provider("b", b))
    with rt:
        ledger = Ledger(rt, db)
        req = request()
        chunks = list(rt.stream(req))
        assert "".join(c.delta for c in chunks) == "from b"
        ledger.check()
    events = of_request(db, req.request_id)
    (failed,) = only(events, AttemptFailed)
    assert (failed.provider, failed.error) == ("a", "ProviderUnavailable")
    assert only(events, RequestCompleted, provider="b", stream=True, attempts=2)


# --- nothing can serve ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_every_provider_failing_lists_each_attempt(
    db: Path, fakes: list[FakeProvider], stream: bool
) -> None:
    """Every provider failing: AllProvidersFailed lists each attempt; request.failed is logged."""
    a, b = fakes
    a.set_behaviour(Behaviour(status=500))
    b.set_behaviour(Behaviour(status=503))
    rt = start(db, provider("a", a, priority=10), provider("b", b))
    with rt:
        ledger = Ledger(rt, db)
        req = request(stream=stream)
        with pytest.raises(AllProvidersFailed) as info:
            if stream:
                list(rt.stream(req))
            else:
                rt.complete(req)
        ledger.check()
    error = info.value
    assert [(e.provider, type(e), e.status) for e in error.attempts] == [
        ("a", ProviderUnavailable, 500),
        ("b", ProviderUnavailable, 503),
    ]
    assert error.request_id == req.request_id
    assert error.last_error is error.attempts[-1]
    events = of_request(db, req.request_id)
    assert [(e.provider, e.status) for e in only(events, AttemptFailed)] == [
        ("a", 500),
        ("b", 503),
    ]
    assert only(events, FallbackExhausted, attempts=2, providers=["a", "b"])
    (final,) = only(events, RequestFailed)
    assert (final.error, final.attempts, final.stream) == ("AllProvidersFailed", 2, stream)
    assert not only(events, RequestCompleted)


def test_saturated_budget_gives_all_providers_saturated_after_the_queue_timeout(
    db: Path, fakes: list[FakeProvider]
) -> None:
    """With every slot taken, a request waits queue_timeout_s, then AllProvidersSaturated."""
    a = fakes[0]
    a.set_behaviour(Behaviour(latency_ms=700))
    config = RuntimeConfig(
        providers=[provider("a", a, max_concurrency=1)],
        failover=failover(queue_timeout_s=0.2),
        health=HEALTH,
        seed=0,
    )
    # The queue waits on real capacity releases, so this runtime keeps the real clock.
    with Runtime.start(config, event_log=db, active_health_checks=False) as rt:
        ledger = Ledger(rt, db)
        results: list[Any] = []
        first = threading.Thread(target=lambda: results.append(rt.complete(request())))
        first.start()
        wait_for(lambda: rt.get_active_requests("a") == 1, "the first request in flight")
        req = request()
        began = time.monotonic()
        with pytest.raises(AllProvidersSaturated) as info:
            rt.complete(req)
        waited = time.monotonic() - began
        assert info.value.request_id == req.request_id
        assert 0.2 <= waited < 0.7
        first.join(timeout=WAIT_S)
        assert [r.provider for r in results] == ["a"]
        ledger.check()
    assert a.stats.requests == 1
    events = of_request(db, req.request_id)
    assert not only(events, AttemptStarted)
    decided = only(events, RouteDecided)
    assert decided and all(d.chosen is None for d in decided)
    assert decided[0].reason == "every candidate saturated"
    assert only(events, RequestFailed, error="AllProvidersSaturated", attempts=0)


# --- a flapping provider --------------------------------------------------------------------


def test_flapping_provider_makes_only_legal_transitions_each_logged_once(
    db: Path, fakes: list[FakeProvider]
) -> None:
    """A provider that keeps failing and recovering moves its circuit legally, one event each."""
    a, b = fakes
    clock = VirtualClock()
    rt = start(db, provider("a", a, priority=10), provider("b", b), clock=clock)
    seen: dict[str, list[Any]] = {"provider_unhealthy": [], "provider_recovered": []}
    for name, box in seen.items():
        rt.on(name, box.append)

    def state() -> str:
        return rt.get_provider_health()["a"].state

    def trip() -> None:
        a.set_behaviour(Behaviour(fail_rate=1.0))
        while state() == "closed":
            assert rt.complete(request()).provider == "b"
            settle(rt)

    def cool_down() -> None:
        clock.advance(10.0)  # past any cooldown (max_cooldown_s is 8)
        rt.tick()
        settle(rt)
        assert state() == "half_open"

    def probe(ok: bool) -> None:
        a.set_behaviour(Behaviour(fail_rate=0.0 if ok else 1.0))
        response = rt.complete(request())
        assert response.provider == ("a" if ok else "b")
        settle(rt)
        assert state() == ("closed" if ok else "open")

    with rt:
        ledger = Ledger(rt, db)
        for cycle in range(3):
            trip()
            cool_down()
            if cycle == 1:
                probe(ok=False)  # the half-open probe fails: open again, no new unhealthy
                cool_down()
            probe(ok=True)
        events = [s.event for s in ledger.check()]

    changes = [(c.from_state, c.to_state) for c in only(events, CircuitStateChanged, provider="a")]
    cycle = [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    failed_probe = [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    assert (
        changes == cycle + failed_probe + [("open", "half_open"), ("half_open", "closed")] + cycle
    )
    assert all(change in LEGAL for change in changes)
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(changes))
    assert len(only(events, ProviderUnhealthy, provider="a")) == 3
    assert len(only(events, ProviderRecovered, provider="a")) == 3
    assert not only(events, CircuitStateChanged, provider="b")
    wait_for(lambda: [len(v) for v in seen.values()] == [3, 3], "the unhealthy/recovered callbacks")
