"""Fault catalogue, shutdown: a close loses nothing silently and logs no false alarm.

A normal close after normal traffic logs no ERROR. A close lets requests in flight finish
within its grace period and ends the rest as ``shutdown``, never blaming their provider. A
close while the store fails retries within the grace period, then reports what it could not
write, and the next start on that file records the gap.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from routeledger import (
    FailoverConfig,
    LogConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    ProviderUnavailable,
    Request,
    RoutingError,
    Runtime,
    RuntimeClosed,
    RuntimeConfig,
    ShutdownReport,
    replay,
)
from routeledger.events import (
    AttemptFailed,
    EventsDropped,
    RequestCompleted,
    RequestFailed,
    StoreFull,
)
from routeledger.fake_provider import Behaviour, FakeProvider
from routeledger.store import SQLiteStore, StoredEvent, gaps_path

MODEL = "fake-model"


def config(fake: FakeProvider, **runtime: Any) -> RuntimeConfig:
    """Return a one-provider configuration on ``fake``."""
    return RuntimeConfig(
        providers=[
            ProviderConfig(
                name="a",
                kind="openai",
                base_url=fake.url + "/v1",
                models=[ModelSpec(name=MODEL, input_per_mtok=1.0, output_per_mtok=2.0)],
                timeout_s=5.0,
            )
        ],
        failover=FailoverConfig(backoff_base_s=0.001, backoff_max_s=0.01),
        seed=0,
        **runtime,
    )


def request(content: str = "hello") -> Request:
    """Return a one-message request."""
    return Request(model=MODEL, messages=[Message(role="user", content=content)], max_tokens=8)


def test_normal_close_after_requests_logs_no_error(
    tmp_path: Path, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Start, serve requests, close at once: no ERROR record (no outcome is ever orphaned)."""
    caplog.set_level(logging.WARNING, logger="routeledger")
    for i in range(20):
        rt = Runtime.start(config(fake), event_log=tmp_path / f"events{i}.sqlite")
        for _ in range(5):
            rt.complete(request())
        rt.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def read(db: Path) -> list[StoredEvent]:
    """Return every committed event of the log."""
    with SQLiteStore(db, readonly=True) as store:
        return list(store.read())


def in_threads(rt: Runtime, n: int) -> tuple[list[threading.Thread], list[object]]:
    """Start ``n`` threads each completing one request; each puts its result or error."""
    results: list[object] = []

    def call() -> None:
        try:
            results.append(rt.complete(request()))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_close_lets_requests_in_flight_finish_within_the_grace_period(tmp_path: Path) -> None:
    """Requests in flight when close() is called are served; new ones are refused clearly."""
    db = tmp_path / "events.sqlite"
    with FakeProvider(Behaviour(latency_ms=300), seed=0) as slow:
        rt = Runtime.start(config(slow), event_log=db, active_health_checks=False)
        threads, results = in_threads(rt, 10)
        wait_for(lambda: rt.get_active_requests("a") == 10, "requests in flight")
        report = rt.close(grace_s=10)
        for t in threads:
            t.join(timeout=10)
        with pytest.raises(RuntimeClosed) as refused:
            rt.complete(request())
        assert isinstance(refused.value, RoutingError)  # what callers caught before
    assert isinstance(report, ShutdownReport)
    assert report.clean and report.cancelled_requests == 0
    assert len(results) == 10 and all(getattr(r, "provider", None) == "a" for r in results)
    completed = [s for s in read(db) if isinstance(s.event, RequestCompleted)]
    assert len(completed) == 10


def test_close_ends_requests_past_the_grace_period_as_shutdown_not_provider_failures(
    tmp_path: Path,
) -> None:
    """Stalled requests end at the grace period with RuntimeClosed, recorded, blaming no one."""
    db = tmp_path / "events.sqlite"
    with FakeProvider(Behaviour(latency_ms=30_000), seed=0) as stalled:
        rt = Runtime.start(config(stalled), event_log=db, active_health_checks=False)
        threads, results = in_threads(rt, 5)
        wait_for(lambda: rt.get_active_requests("a") == 5, "requests in flight")
        report = rt.close(grace_s=0.2)
        for t in threads:
            t.join(timeout=5)
        assert not any(t.is_alive() for t in threads)
    assert report.cancelled_requests == 5
    assert len(results) == 5 and all(isinstance(r, RuntimeClosed) for r in results)
    assert not any(isinstance(r, ProviderUnavailable) for r in results)
    stored = [s.event for s in read(db)]
    failed = [e for e in stored if isinstance(e, RequestFailed)]
    assert len(failed) == 5 and {e.error for e in failed} == {"RuntimeClosed"}
    assert all("shutdown" in e.message for e in failed)
    attempts = [e for e in stored if isinstance(e, AttemptFailed)]
    assert {e.error for e in attempts} == {"AttemptCancelled"}
    assert not any(e.counts_against_health for e in attempts)
    metrics = replay(db).metrics["a"]
    assert metrics.failures == 0 and metrics.cancelled == 5


def fill_up(rt: Runtime, store: SQLiteStore) -> None:
    """Serve requests until the store's size limit refuses a flush."""
    for _ in range(60):
        rt.complete(request("x" * 6000))
        try:
            rt.flush()
        except StoreFull:
            return
    pytest.fail("the store never filled up")


def test_close_with_a_failing_store_reports_the_loss_and_the_next_start_records_the_gap(
    tmp_path: Path, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Unwritten events at close: returned, logged at ERROR, and a gap event at the next start."""
    db = tmp_path / "events.sqlite"
    store = SQLiteStore(db, max_size_bytes=64 * 1024)
    log = LogConfig(include_text=True)
    rt = Runtime.start(config(fake, log=log), event_log=store, active_health_checks=False)
    fill_up(rt, store)
    for _ in range(3):
        rt.complete(request("x" * 6000))
    caplog.set_level(logging.ERROR, logger="routeledger")
    report = rt.close(grace_s=0.2)
    assert report.unwritten_events > 0 and report.gap_kept
    assert report.store_error is not None and "full" in report.store_error
    assert any(
        str(report.unwritten_events) in r.getMessage() and "before close" in r.getMessage()
        for r in caplog.records
    )
    assert Path(gaps_path(str(db))).exists()
    with Runtime.start(config(fake), event_log=db, active_health_checks=False):
        pass
    gaps = [s.event for s in read(db) if isinstance(s.event, EventsDropped)]
    assert len(gaps) == 1 and gaps[0].count == report.unwritten_events
    assert "before the runtime closed" in gaps[0].reason
    assert not Path(gaps_path(str(db))).exists()
    with Runtime.start(config(fake), event_log=db, active_health_checks=False):
        pass  # a third start records no second gap
    assert len([s for s in read(db) if isinstance(s.event, EventsDropped)]) == 1
