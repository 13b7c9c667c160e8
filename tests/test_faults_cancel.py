"""Fault catalogue, cancellation: a cancelled async call stops, frees its slot, and says so.

A cancelled ``acomplete`` or ``astream`` closes its HTTP exchange, releases its provider's
slot at once, is recorded as cancelled (never as the provider's failure), and holds no
worker thread, so other async callers are never starved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from routeledger import (
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
    replay,
)
from routeledger.actors.wire import CancelScope
from routeledger.events import AttemptFailed, RequestCompleted, RequestFailed
from routeledger.store import SQLiteStore, StoredEvent
from routeledger.testing import Behaviour, FakeProvider, no_backoff

MODEL = "fake-model"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    """Run a stalled provider (answers after 30 s) and a healthy one."""
    with (
        FakeProvider(Behaviour(latency_ms=30_000), seed=0) as stalled,
        FakeProvider(Behaviour(), seed=0) as healthy,
    ):
        yield stalled, healthy


def provider(name: str, fake: FakeProvider, **kwargs: object) -> ProviderConfig:
    """Return a provider on ``fake`` with a long timeout (a cancel must not wait for it)."""
    return ProviderConfig(
        name=name,
        kind="openai",
        base_url=fake.url + "/v1",
        models=[ModelSpec(name=MODEL)],
        timeout_s=60.0,
        max_concurrency=100,
        **kwargs,  # type: ignore[arg-type]
    )


def start(stalled: FakeProvider, healthy: FakeProvider, db: Path) -> Runtime:
    """Start a runtime with few worker threads: a held thread would show as starvation."""
    config = RuntimeConfig(
        providers=[provider("stalled", stalled), provider("healthy", healthy)],
        failover=no_backoff(),
        seed=0,
    )
    return Runtime.start(config, event_log=db, active_health_checks=False, max_workers=4)


def request(**kwargs: object) -> Request:
    """Return a one-message request."""
    return Request(model=MODEL, messages=[Message(role="user", content="hello")], **kwargs)  # type: ignore[arg-type]


def read(db: Path) -> list[StoredEvent]:
    """Return every committed event of the log."""
    with SQLiteStore(db, readonly=True) as store:
        return list(store.read())


def test_cancelled_acomplete_calls_free_their_slots_threads_and_blame_no_provider(
    tmp_path: Path, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    """16 cancelled calls to a stalled provider leave no slot or thread held; a call then runs."""
    stalled, healthy = fakes
    db = tmp_path / "events.sqlite"
    rt = start(stalled, healthy, db)

    async def scenario() -> str:
        calls = [
            asyncio.create_task(rt.acomplete(request(), preferred_provider="stalled"))
            for _ in range(16)
        ]
        await asyncio.sleep(0)
        await asyncio.to_thread(
            wait_for, lambda: rt.get_active_requests("stalled") == 4, "4 calls in flight"
        )
        for call in calls:
            call.cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        # Four worker threads only: a call held by a cancelled one would wait 30 s.
        answer = await asyncio.wait_for(
            rt.acomplete(request(), preferred_provider="healthy"), timeout=10
        )
        return answer.provider

    with rt:
        assert asyncio.run(scenario()) == "healthy"
        wait_for(lambda: rt.get_active_requests("stalled") == 0, "slots released")
        rt.flush()
        assert rt.get_metrics()["stalled"].failures == 0
    stored = [s.event for s in read(db)]
    attempts = [e for e in stored if isinstance(e, AttemptFailed)]
    assert attempts and {e.error for e in attempts} == {"AttemptCancelled"}
    ended = [e for e in stored if isinstance(e, RequestFailed)]
    assert ended and {e.error for e in ended} == {"RequestCancelled"}
    completed = [e for e in stored if isinstance(e, RequestCompleted)]
    assert [e.provider for e in completed] == ["healthy"]
    assert replay(db).metrics["stalled"].cancelled == len(attempts)


def test_an_astream_cancelled_while_waiting_raises_cancelled_error_and_frees_its_slot(
    tmp_path: Path, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    """A stream cancelled before its first chunk: CancelledError, slot released, cancelled."""
    stalled, healthy = fakes
    db = tmp_path / "events.sqlite"
    rt = start(stalled, healthy, db)

    async def consume() -> None:
        async for _ in rt.astream(request(), preferred_provider="stalled"):
            pass

    async def scenario() -> BaseException | None:
        task = asyncio.create_task(consume())
        await asyncio.to_thread(
            wait_for, lambda: rt.get_active_requests("stalled") == 1, "the stream in flight"
        )
        task.cancel()
        try:
            await task
        except BaseException as exc:
            return exc
        return None

    with rt:
        assert isinstance(asyncio.run(scenario()), asyncio.CancelledError)
        wait_for(lambda: rt.get_active_requests("stalled") == 0, "slot released")
        rt.flush()
    stored = [s.event for s in read(db)]
    (attempt,) = [e for e in stored if isinstance(e, AttemptFailed)]
    assert attempt.error == "AttemptCancelled" and not attempt.counts_against_health
    (ended,) = [e for e in stored if isinstance(e, RequestFailed)]
    assert ended.error == "RequestCancelled"


def test_an_astream_cancelled_mid_stream_is_recorded_as_cancelled(tmp_path: Path) -> None:
    """A stream cancelled between chunks ends as cancelled, not as the provider's break."""
    slow = Behaviour(output_tokens=50, inter_token_ms=200)
    with FakeProvider(slow, seed=0) as fake, FakeProvider(Behaviour(), seed=0) as other:
        db = tmp_path / "events.sqlite"
        rt = start(fake, other, db)

        async def scenario() -> int:
            seen = 0

            async def consume() -> None:
                nonlocal seen
                async for _ in rt.astream(request(), preferred_provider="stalled"):
                    seen += 1

            task = asyncio.create_task(consume())
            while seen < 2:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return seen

        with rt:
            assert asyncio.run(scenario()) >= 2
            wait_for(lambda: rt.get_active_requests("stalled") == 0, "slot released")
            rt.flush()
            assert rt.get_metrics()["stalled"].failures == 0
    stored = [s.event for s in read(db)]
    (attempt,) = [e for e in stored if isinstance(e, AttemptFailed)]
    assert attempt.error == "StreamCancelled"
    (ended,) = [e for e in stored if isinstance(e, RequestFailed)]
    assert ended.error == "RequestCancelled"


def test_a_cancel_landing_just_as_a_chunk_arrived_is_still_recorded_as_cancelled(
    tmp_path: Path,
) -> None:
    """A stream whose scope is cancelled between two reads ends as RequestCancelled."""
    # astream meets this when the task is cancelled after the worker delivered a chunk but
    # before the task resumed: the scope is cancelled, then the generator is closed.
    slow = Behaviour(output_tokens=50, inter_token_ms=50)
    with FakeProvider(slow, seed=0) as fake, FakeProvider(Behaviour(), seed=0) as other:
        db = tmp_path / "events.sqlite"
        with start(fake, other, db) as rt:
            query = rt._prepare(request(), "stalled", None, None, None, stream=True)
            scope = CancelScope()
            chunks = rt._requests.stream(query, scope)
            next(chunks)
            next(chunks)
            rt._requests.cancel(scope)
            chunks.close()
            rt.flush()
    stored = [s.event for s in read(db)]
    (ended,) = [e for e in stored if isinstance(e, RequestFailed)]
    assert ended.error == "RequestCancelled"
