"""Fault catalogue, shutdown: a close loses nothing silently and logs no false alarm.

A normal close after normal traffic logs no ERROR. A close while the store fails retries
within ``LogConfig.close_grace_s``, then reports what it could not write, and the next start
on that file records the gap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from routeledger import (
    FailoverConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
)
from routeledger.fake_provider import Behaviour, FakeProvider

MODEL = "fake-model"


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    """Stop every actor a test left running."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """Run one healthy fake provider."""
    with FakeProvider(Behaviour(), seed=0) as server:
        yield server


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
