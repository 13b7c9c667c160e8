"""End-to-end streaming: chunks and usage, failover before the first chunk, interruptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from routeledger import Runtime, StreamChunk, StreamInterrupted
from routeledger.testing import Behaviour, FakeProvider, no_backoff

Fakes = Callable[..., list[FakeProvider]]
COMPLETIONS = "/v1/chat/completions"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_stream_delivers_chunks_with_usage_and_cost_last(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any, kind: str
) -> None:
    """A stream yields the text in chunks; the last chunk carries usage and cost."""
    (a,) = fakes(1, Behaviour(content="one two three four", output_tokens=4))
    cfg = config_for({"a": a}, per_provider={"a": {"kind": kind}})
    with Runtime.start(cfg, event_log=db) as rt:
        request = req()
        chunks = list(rt.stream(request))
        rt.flush()
    text = "".join(c.delta for c in chunks)
    assert text.split() == ["one", "two", "three", "four"]
    assert len([c for c in chunks if c.delta]) == 4
    last = chunks[-1]
    assert last.usage is not None and last.usage.output_tokens == 4
    assert last.cost is not None and last.cost > 0
    assert all(c.usage is None for c in chunks[:-1])
    [done] = events(db, "request.completed", request_id=request.request_id)
    assert done.stream and done.output_tokens == 4 and done.cost == pytest.approx(last.cost)


def test_stream_fails_over_before_the_first_chunk(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A provider failing before any chunk is replaced by the next one, invisibly."""
    (down,) = fakes(1, Behaviour(status=503))
    (up,) = fakes(1)
    cfg = config_for(
        {"down": down, "up": up},
        per_provider={"down": {"priority": 10}},
        failover=no_backoff(),
    )
    with Runtime.start(cfg, event_log=db) as rt:
        request = req()
        chunks = list(rt.stream(request))
        rt.flush()
    assert chunks and chunks[-1].finish_reason is not None
    [done] = events(db, "request.completed", request_id=request.request_id)
    assert done.provider == "up" and done.attempts == 2
    assert len(events(db, "fallback.succeeded", request_id=request.request_id)) == 1


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(truncate_after_chunks=2, output_tokens=6),
        Behaviour(error_event_after_chunks=2, output_tokens=6),
    ],
    ids=["truncated", "error-event"],
)
def test_a_stream_broken_after_its_first_chunk_is_never_rerun(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any, behaviour: Behaviour
) -> None:
    """A mid-stream failure raises StreamInterrupted, is logged, and nothing is retried."""
    (broken,) = fakes(1, behaviour)
    (spare,) = fakes(1)
    cfg = config_for({"broken": broken, "spare": spare}, per_provider={"broken": {"priority": 10}})
    with Runtime.start(cfg, event_log=db) as rt:
        request = req()
        got: list[StreamChunk] = []
        with pytest.raises(StreamInterrupted) as info:
            for chunk in rt.stream(request):
                got.append(chunk)
        rt.flush()
        active = rt.get_active_requests()
    assert len([c for c in got if c.delta]) == 2
    assert info.value.provider == "broken"
    assert spare.stats.requests == 0
    assert active == {"broken": 0, "spare": 0}
    [failed] = events(db, "attempt.failed", request_id=request.request_id)
    assert failed.error == "StreamInterrupted" and failed.provider == "broken"
    [final] = events(db, "request.failed", request_id=request.request_id)
    assert final.error == "StreamInterrupted" and final.stream
    assert events(db, "request.completed", request_id=request.request_id) == []
    assert events(db, "fallback.exhausted", request_id=request.request_id) == []


def test_closing_a_stream_early_releases_its_slot(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A caller that stops reading gives the slot back; it is recorded as a cancellation."""
    (a,) = fakes(1, Behaviour(output_tokens=20, inter_token_ms=2))
    cfg = config_for({"a": a}, per_provider={"a": {"max_concurrency": 1}})
    with Runtime.start(cfg, event_log=db) as rt:
        request = req()
        stream = rt.stream(request)
        next(stream)
        assert rt.get_active_requests("a") == 1
        stream.close()  # type: ignore[attr-defined]  # typed Iterator; it is a generator
        assert rt.get_active_requests("a") == 0
        assert rt.complete(req()).provider == "a"  # the only slot is free again
        rt.flush()
        metrics = rt.get_metrics()["a"]
    [failed] = events(db, "attempt.failed", request_id=request.request_id)
    assert failed.error == "StreamCancelled" and not failed.counts_against_health
    # Counted as an attempt, not as a failure of the provider.
    assert (metrics.requests, metrics.cancelled, metrics.failures) == (2, 1, 0)


def test_astream_yields_the_same_chunks(fakes: Fakes, config_for: Any, req: Any, db: Path) -> None:
    """``astream`` streams on worker threads and delivers the whole answer."""
    (a,) = fakes(1, Behaviour(content="alpha beta gamma", output_tokens=3))
    cfg = config_for({"a": a})

    async def collect(rt: Runtime) -> list[StreamChunk]:
        return [chunk async for chunk in rt.astream(req())]

    with Runtime.start(cfg, event_log=db) as rt:
        chunks = asyncio.run(collect(rt))
        assert rt.get_active_requests("a") == 0
    assert "".join(c.delta for c in chunks).split() == ["alpha", "beta", "gamma"]
    assert chunks[-1].usage is not None
    assert a.stats.by_path[COMPLETIONS] == 1


def test_stopping_after_the_final_chunk_completes_the_request(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """A caller breaking out once ``finish_reason`` arrives got the whole answer: it is billed."""
    (a,) = fakes(1, Behaviour(output_tokens=3))
    cfg = config_for({"a": a})
    with Runtime.start(cfg, event_log=db) as rt:
        request = req()
        stream = rt.stream(request)
        for chunk in stream:
            if chunk.finish_reason is not None:
                break
        stream.close()  # type: ignore[attr-defined]  # typed Iterator; it is a generator
        assert rt.get_active_requests("a") == 0
        rt.flush()
        metrics = rt.get_metrics()["a"]
    [done] = events(db, "request.completed", request_id=request.request_id)
    assert done.output_tokens == 3 and done.cost is not None
    assert events(db, "attempt.failed", request_id=request.request_id) == []
    assert metrics.successes == 1 and metrics.output_tokens == 3
