"""Context windows: the filter that checks them, and failover after a context-length error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from routeledger import (
    ContextLengthExceeded,
    HealthConfig,
    Message,
    ModelSpec,
    PromptTooLong,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
    VirtualClock,
)
from routeledger.actors._strategies import View, filter_candidates
from routeledger.actors.wire import error_from_status
from routeledger.events import AttemptStarted, RouteDecided
from routeledger.store import SQLiteStore
from routeledger.testing import Behaviour, FakeProvider, no_backoff

MODEL = "fake-model"

# The error bodies of an over-long prompt, as the providers' API references give them.
OPENAI_TOO_LONG = (
    b'{"error": {"message": "This model\'s maximum context length is 128000 tokens. However, '
    b'your messages resulted in 130005 tokens. Please reduce the length of the messages.", '
    b'"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}'
)
ANTHROPIC_TOO_LONG = (
    b'{"type": "error", "error": {"type": "invalid_request_error", '
    b'"message": "prompt is too long: 212345 tokens > 200000 maximum"}}'
)


@pytest.mark.parametrize("body", [OPENAI_TOO_LONG, ANTHROPIC_TOO_LONG], ids=["openai", "anthropic"])
def test_both_providers_context_length_errors_are_context_length_exceeded(body: bytes) -> None:
    """The documented 400 of an over-long prompt is ContextLengthExceeded, which may fail over."""
    error = error_from_status(400, httpx.Headers(), body)
    assert type(error) is ContextLengthExceeded
    assert (error.retryable, error.failover) == (False, True)


def view(name: str, window: int | None) -> View:
    return View(
        name=name,
        down=None,
        serves_model=True,
        capabilities=frozenset({"streaming"}),
        circuit="closed",
        latency_ms=None,
        cost=None,
        context_window=window,
    )


def test_the_filter_drops_a_window_too_small_for_the_prompt_and_output() -> None:
    """A window under the estimate is dropped with its reason; an unconfigured one is kept."""
    views = [view("small", 8_192), view("big", 200_000), view("unset", None)]
    kept, dropped = filter_candidates(views, required=frozenset(), needed_tokens=10_000)
    assert kept == ["big", "unset"]
    assert dropped == {
        "small": "context window 8192 cannot hold ~10000 tokens (estimated prompt + max_tokens)"
    }


def test_after_a_context_length_error_only_a_known_larger_window_is_kept() -> None:
    """Once a window of 8192 refused the prompt, windows <= 8192 and unknown ones are out."""
    views = [view("same", 8_192), view("big", 200_000), view("unset", None)]
    kept, dropped = filter_candidates(
        views, required=frozenset(), needed_tokens=10, context_over=8_192
    )
    assert kept == ["big"]
    assert dropped == {
        "same": "context window 8192 not larger than the 8192 that refused the prompt",
        "unset": "context window unknown not larger than the 8192 that refused the prompt",
    }


# --- end to end through the loopback fake provider ---------------------------------------------


@pytest.fixture
def fakes() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    """``a`` refuses every prompt as too long; ``b`` serves."""
    with (
        FakeProvider(Behaviour(error_code="context_length_exceeded")) as a,
        FakeProvider(Behaviour()) as b,
    ):
        yield a, b


def start(
    db: Path, *providers: tuple[str, FakeProvider, int | None], kind: str = "openai"
) -> Runtime:
    config = RuntimeConfig(
        providers=[
            ProviderConfig(
                name=name,
                kind=kind,
                base_url=fake.url + "/v1",
                models=[ModelSpec(name=MODEL, context_window=window)],
                priority=10 - i,
                timeout_s=5.0,
            )
            for i, (name, fake, window) in enumerate(providers)
        ],
        failover=no_backoff(),
        health=HealthConfig(failure_threshold=5),
        seed=0,
    )
    return Runtime.start(config, event_log=db, clock=VirtualClock(), active_health_checks=False)


def request(chars: int = 5, max_tokens: int = 8) -> Request:
    return Request(
        model=MODEL, messages=[Message(role="user", content="x" * chars)], max_tokens=max_tokens
    )


def decisions(db: Path, request_id: str) -> list[Any]:
    store = SQLiteStore(db, readonly=True)
    try:
        return [s.event for s in store.read_request(request_id)]
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_context_length_error_fails_over_to_a_model_with_a_larger_window(
    tmp_path: Path, fakes: tuple[FakeProvider, FakeProvider], kind: str
) -> None:
    """``a`` (8k) refuses the prompt as too long: ``b`` (200k) serves it."""
    a, b = fakes
    db = tmp_path / "log.sqlite"
    with start(db, ("a", a, 8_192), ("b", b, 200_000), kind=kind) as rt:
        response = rt.complete(request())
        rt.flush()
    assert (response.provider, response.attempts) == ("b", 2)
    assert (a.stats.requests, b.stats.requests) == (1, 1)


def test_a_context_length_error_with_no_larger_window_ends_the_request(
    tmp_path: Path, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    """With ``b``'s window unknown, nothing is known to be larger: the provider's error ends it."""
    a, b = fakes
    db = tmp_path / "log.sqlite"
    req = request()
    with start(db, ("a", a, 8_192), ("b", b, None)) as rt:
        with pytest.raises(ContextLengthExceeded) as info:
            rt.complete(req)
        rt.flush()
    assert info.value.provider == "a"
    assert (a.stats.requests, b.stats.requests) == (1, 0)
    last = [e for e in decisions(db, req.request_id) if isinstance(e, RouteDecided)][-1]
    assert last.excluded == {
        "a": "failed earlier in this request",
        "b": "context window unknown not larger than the 8192 that refused the prompt",
    }


def test_a_prompt_too_long_for_one_window_is_routed_to_a_larger_one_unsent(
    tmp_path: Path, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    """A ~10k-token prompt never goes to the 8k model: the filter drops it, with its reason."""
    a, b = fakes
    db = tmp_path / "log.sqlite"
    with start(db, ("a", a, 8_192), ("b", b, 200_000)) as rt:
        response = rt.complete(request(chars=40_000, max_tokens=100))
        rt.flush()
    assert (response.provider, response.attempts) == ("b", 1)
    assert a.stats.requests == 0
    (decided,) = [e for e in decisions(db, response.request_id) if isinstance(e, RouteDecided)]
    assert decided.excluded == {
        "a": "context window 8192 cannot hold ~10101 tokens (estimated prompt + max_tokens)"
    }


def test_a_request_no_configured_model_can_hold_fails_fast(
    tmp_path: Path, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    """A prompt over every window is refused before any provider sees it: PromptTooLong."""
    a, b = fakes
    db = tmp_path / "log.sqlite"
    req = request(chars=40_000, max_tokens=100)
    with start(db, ("a", a, 8_192), ("b", b, 4_096)) as rt:
        with pytest.raises(PromptTooLong, match="can hold the request") as info:
            rt.complete(req)
        rt.flush()
    assert set(info.value.excluded) == {"a", "b"}
    assert (a.stats.requests, b.stats.requests) == (0, 0)
    assert not [e for e in decisions(db, req.request_id) if isinstance(e, AttemptStarted)]


def test_with_failover_disabled_a_context_length_error_reaches_the_caller_as_is(
    tmp_path: Path, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    """No attempt left for a larger window: the caller sees the provider's own error."""
    a, b = fakes
    config = RuntimeConfig(
        providers=[
            ProviderConfig(
                name=name,
                kind="openai",
                base_url=fake.url + "/v1",
                models=[ModelSpec(name=MODEL, context_window=window)],
                priority=priority,
            )
            for name, fake, window, priority in [("a", a, 8_192, 10), ("b", b, 200_000, 0)]
        ],
        failover=no_backoff(enabled=False),
        seed=0,
    )
    db = tmp_path / "log.sqlite"
    rt = Runtime.start(config, event_log=db, active_health_checks=False)
    with rt, pytest.raises(ContextLengthExceeded):
        rt.complete(request())
    assert (a.stats.requests, b.stats.requests) == (1, 0)
