"""Time bounds of an exchange: trickled headers, first token, idle gaps, the request's deadline.

httpx's timeouts are per read: a server sending one byte every 50 ms never trips a 0.5 s
timeout. These tests run against the loopback fake provider trickling on purpose, and check
that each bound ends the exchange on time, with the error the failover policy expects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore
import pytest

from routeledger import (
    AllProvidersFailed,
    HealthConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    ProviderTimeout,
    Request,
    Runtime,
    RuntimeConfig,
    StreamInterrupted,
)
from routeledger.actors.wire import CancelScope, make_adapter
from routeledger.actors.wire._cancel import _limit, time_bound
from routeledger.testing import Behaviour, FakeProvider, no_backoff

MODEL = "fake-model"
SLACK_S = 1.0
"""How late past a bound an exchange may end on a loaded 2-core machine."""


def config(fake: FakeProvider, name: str = "a", kind: str = "openai", **fields: Any) -> Any:
    fields.setdefault("timeout_s", 5.0)
    return ProviderConfig(
        name=name,
        kind=kind,
        base_url=fake.url + "/v1",
        models=[ModelSpec(name=MODEL)],
        **fields,
    )


def request(**fields: Any) -> Request:
    return Request(
        model=MODEL, messages=[Message(role="user", content="hi")], max_tokens=8, **fields
    )


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(Behaviour()) as f:
        yield f


# --- the bounds themselves --------------------------------------------------------------------


def test_a_read_is_cut_to_the_tightest_bound_and_fails_once_it_passed() -> None:
    """The inner bound, the outer one and the scope's deadline: the earliest one cuts."""
    now = time.monotonic()
    assert _limit(None, 5.0) == (5.0, "")
    with time_bound(now + 100, "outer"), time_bound(now + 1000, "looser, ignored"):
        timeout, what = _limit(None, 500.0)
        assert what == "outer" and 99 < (timeout or 0) <= 100
        scope = CancelScope()
        scope.deadline = now + 10
        timeout, what = _limit(scope, 500.0)
        assert what == "the request's deadline passed" and 9 < (timeout or 0) <= 10
        assert _limit(scope, 1.0) == (1.0, "")  # the read's own timeout is tighter
    with time_bound(now - 1, "over"), pytest.raises(httpcore.ReadTimeout, match="over"):
        _limit(None, 5.0)


# --- timeout_s bounds the exchange up to the complete headers ---------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_trickled_response_headers_cannot_keep_a_completion_past_timeout_s(
    fake: FakeProvider, kind: str
) -> None:
    """A head sent one byte every 50 ms (some 8 s in all) ends a 0.5 s completion at 0.5 s."""
    fake.set_behaviour(Behaviour(trickle_head_ms=50))
    with make_adapter(config(fake, kind=kind, timeout_s=0.5)) as adapter:
        started = time.monotonic()
        with pytest.raises(ProviderTimeout, match=r"no complete answer within 0\.5 s"):
            adapter.complete(request(), ModelSpec(name=MODEL))
        assert time.monotonic() - started < 0.5 + SLACK_S


def test_trickled_response_headers_cannot_keep_a_stream_past_timeout_s(
    fake: FakeProvider,
) -> None:
    """A stream's head trickled past ``timeout_s`` fails before its first chunk (failover)."""
    fake.set_behaviour(Behaviour(trickle_head_ms=50))
    with make_adapter(config(fake, timeout_s=0.5)) as adapter:
        started = time.monotonic()
        with pytest.raises(ProviderTimeout, match=r"no response headers within 0\.5 s"):
            next(iter(adapter.stream(request(stream=True), ModelSpec(name=MODEL))))
        assert time.monotonic() - started < 0.5 + SLACK_S


def test_complete_with_trickled_headers_ends_within_its_deadline(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """The issue's case (timeout_s=2, deadline 5) at half the scale: it ends at timeout_s."""
    fake.set_behaviour(Behaviour(trickle_head_ms=100))
    cfg = RuntimeConfig(providers=[config(fake, timeout_s=1.0)], failover=no_backoff(), seed=0)
    with Runtime.start(cfg, event_log=tmp_path / "log.sqlite", active_health_checks=False) as rt:
        started = time.monotonic()
        with pytest.raises(AllProvidersFailed) as info:
            rt.complete(request(deadline=2.5))
        assert time.monotonic() - started < 1.0 + SLACK_S
    assert [type(e) for e in info.value.attempts] == [ProviderTimeout]


# --- a stream's first chunk and the gaps after it ---------------------------------------------


def test_a_first_chunk_later_than_first_token_timeout_fails_over(tmp_path: Path) -> None:
    """``a``'s first chunk would come after 3 s; at 0.3 s the stream moves to ``b``."""
    with (
        FakeProvider(Behaviour(ttft_ms=3000)) as slow,
        FakeProvider(Behaviour()) as fast,
    ):
        cfg = RuntimeConfig(
            providers=[
                config(slow, "a", priority=10, first_token_timeout_s=0.3),
                config(fast, "b"),
            ],
            failover=no_backoff(),
            health=HealthConfig(failure_threshold=5),
            seed=0,
        )
        with Runtime.start(
            cfg, event_log=tmp_path / "log.sqlite", active_health_checks=False
        ) as rt:
            started = time.monotonic()
            chunks = list(rt.stream(request(stream=True)))
            assert time.monotonic() - started < 0.3 + SLACK_S
        assert {c.provider for c in chunks} == {"b"}
        assert chunks[-1].finish_reason is not None


def test_first_token_timeout_defaults_to_the_contracts_ten_seconds() -> None:
    """``ProviderConfig.first_token_timeout_s`` is 10 s unless set; the idle bound follows
    ``timeout_s`` unless set."""
    p = ProviderConfig(name="p", kind="openai", base_url="http://127.0.0.1:1", models=[])
    assert (p.first_token_timeout_s, p.stream_idle_timeout_s) == (10.0, None)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_stream_trickling_after_its_first_chunk_ends_at_its_idle_timeout(
    fake: FakeProvider, kind: str
) -> None:
    """Bytes every 50 ms keep each read alive, but no chunk for 0.3 s ends the stream."""
    fake.set_behaviour(Behaviour(inter_token_ms=1, trickle_ms=50, output_tokens=4))
    cfg = config(fake, kind=kind, timeout_s=2.0, stream_idle_timeout_s=0.3)
    with make_adapter(cfg) as adapter:
        chunks = adapter.stream(request(stream=True), ModelSpec(name=MODEL))
        first = next(iter(chunks))
        assert first.delta
        started = time.monotonic()
        with pytest.raises(ProviderTimeout, match=r"no chunk for 0\.3 s"):
            list(chunks)
        assert time.monotonic() - started < 0.3 + SLACK_S


def test_the_requests_deadline_ends_a_stream_that_trickles_on(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """A stream of a chunk every 100 ms for 20 s ends at its 0.8 s deadline, interrupted."""
    fake.set_behaviour(Behaviour(inter_token_ms=100, output_tokens=200))
    cfg = RuntimeConfig(providers=[config(fake)], failover=no_backoff(), seed=0)
    with Runtime.start(cfg, event_log=tmp_path / "log.sqlite", active_health_checks=False) as rt:
        started = time.monotonic()
        got = 0
        with pytest.raises(StreamInterrupted, match="deadline") as info:
            for _ in rt.stream(request(stream=True, deadline=0.8)):
                got += 1
        assert time.monotonic() - started < 0.8 + SLACK_S
    assert 1 <= got < 200
    assert info.value.provider == "a"
