"""Fault catalogue, the API boundary: bad values get a clear error of the hierarchy at once.

Whatever the caller passes, the answer is a :class:`RequestError` or a :class:`ConfigError`
(never a bare TypeError, ValueError or AttributeError), and nothing the API accepted is later
dropped by the log writer as unstorable: the log of every test holds no gap event.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from routeledger import (
    ABTestConfig,
    ConfigError,
    Message,
    ModelSpec,
    PoolConfig,
    ProviderConfig,
    Request,
    RequestError,
    RouteledgerError,
    Runtime,
    RuntimeConfig,
)
from routeledger.events import EventsDropped, TextPart
from routeledger.fake_provider import FakeProvider
from routeledger.store import SQLiteStore

MODEL = "fake-model"


def config(fake: FakeProvider, **provider: Any) -> RuntimeConfig:
    """Return a one-provider configuration on ``fake`` with one A/B test ``t``."""
    return RuntimeConfig(
        providers=[
            ProviderConfig(
                name="a",
                kind="openai",
                base_url=fake.url + "/v1",
                models=[ModelSpec(name=MODEL)],
                timeout_s=5.0,
                **provider,
            )
        ],
        ab_tests=[ABTestConfig(name="t", variant_a="a", variant_b="a")],
        seed=0,
    )


def request(**kwargs: Any) -> Request:
    """Return a one-message request (fields overridden by ``kwargs``)."""
    kwargs.setdefault("messages", [Message(role="user", content="hello")])
    return Request(model=MODEL, max_tokens=8, **kwargs)


def gaps(db: Path) -> list[EventsDropped]:
    """Return the gap events of the log at ``db``."""
    with SQLiteStore(db, readonly=True) as store:
        return [s.event for s in store.read() if isinstance(s.event, EventsDropped)]


# Each case: a call on a started runtime, and the error type it must raise.
CALLS: list[tuple[str, Callable[[Runtime], object], type[RouteledgerError]]] = [
    ("non-string metadata", lambda rt: rt.complete(request(metadata={"k": 5})), RequestError),
    ("non-string metadata key", lambda rt: rt.complete(request(metadata={5: "v"})), RequestError),
    ("metadata not a dict", lambda rt: rt.complete(request(metadata=["k"])), RequestError),
    (
        "a/b latency NaN",
        lambda rt: rt.record_ab_test_metrics("t", "A", latency_ms=math.nan),
        RequestError,
    ),
    (
        "a/b latency inf",
        lambda rt: rt.record_ab_test_metrics("t", "A", latency_ms=math.inf),
        RequestError,
    ),
    (
        "a/b cost inf",
        lambda rt: rt.record_ab_test_metrics("t", "A", latency_ms=1.0, cost=math.inf),
        RequestError,
    ),
    (
        "pool weight inf",
        lambda rt: rt.create_pool(PoolConfig(name="p", providers=["a"], weights={"a": math.inf})),
        ConfigError,
    ),
    (
        "streamed non-string metadata",
        lambda rt: list(rt.stream(request(metadata={"k": 1.5}))),
        RequestError,
    ),
]


@pytest.mark.parametrize(("call", "error"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_values_the_writer_cannot_store_are_refused_at_the_api(
    tmp_path: Path,
    fake: FakeProvider,
    call: Callable[[Runtime], object],
    error: type[RouteledgerError],
) -> None:
    """An unstorable value is a clear error at the call, and the log records no gap."""
    db = tmp_path / "events.sqlite"
    with Runtime.start(config(fake), event_log=db, active_health_checks=False) as rt:
        with pytest.raises(error):
            call(rt)
        rt.complete(request())  # the runtime goes on serving
        rt.flush()
    assert gaps(db) == []


def test_infinite_provider_weight_is_refused_at_start(tmp_path: Path, fake: FakeProvider) -> None:
    """weight=inf would drop every route.decided: Runtime.start refuses it, writing nothing."""
    db = tmp_path / "events.sqlite"
    with pytest.raises(ConfigError, match="weight"):
        Runtime.start(config(fake, weight=math.inf), event_log=db, active_health_checks=False)
    assert not db.exists()


def test_infinite_seed_metric_of_an_ab_test_is_refused(tmp_path: Path, fake: FakeProvider) -> None:
    """Seed metrics of an A/B test must be finite numbers (they are stored as given)."""
    test = ABTestConfig(
        name="s", variant_a="a", variant_b="a", metrics={"A": {"latency_ms": math.inf}}
    )
    with (
        Runtime.start(config(fake), active_health_checks=False) as rt,
        pytest.raises(ConfigError, match="metrics"),
    ):
        rt.setup_ab_test(test)


# --- item 10: no raw exception escapes the hierarchy ------------------------------------------

RAW: list[tuple[str, Callable[[Runtime], object], type[RouteledgerError]]] = [
    (
        "text part of an int",
        lambda rt: rt.complete(
            request(messages=[Message(role="user", content=[TextPart(text=5)])])  # type: ignore[arg-type]
        ),
        RequestError,
    ),
    ("a dict for a request", lambda rt: rt.complete({"model": MODEL}), RequestError),  # type: ignore[arg-type]
    ("a dict for a stream", lambda rt: rt.stream({"model": MODEL}), RequestError),  # type: ignore[arg-type]
    ("priority NaN", lambda rt: rt.set_provider_priority("a", math.nan), ConfigError),  # type: ignore[arg-type]
    ("priority 'high'", lambda rt: rt.set_provider_priority("a", "high"), ConfigError),  # type: ignore[arg-type]
    ("priority 2.5", lambda rt: rt.set_provider_priority("a", 2.5), ConfigError),  # type: ignore[arg-type]
    ("priority True", lambda rt: rt.set_provider_priority("a", True), ConfigError),
    (
        "a/b latency 'fast'",
        lambda rt: rt.record_ab_test_metrics("t", "A", latency_ms="fast"),  # type: ignore[arg-type]
        RequestError,
    ),
    (
        "a/b cost 'cheap'",
        lambda rt: rt.record_ab_test_metrics("t", "A", latency_ms=1.0, cost="cheap"),  # type: ignore[arg-type]
        RequestError,
    ),
]


@pytest.mark.parametrize(("call", "error"), [c[1:] for c in RAW], ids=[c[0] for c in RAW])
def test_bad_arguments_raise_errors_of_the_hierarchy(
    tmp_path: Path,
    fake: FakeProvider,
    call: Callable[[Runtime], object],
    error: type[RouteledgerError],
) -> None:
    """A wrongly typed argument is a RequestError or ConfigError, never a bare Python error."""
    db = tmp_path / "events.sqlite"
    with Runtime.start(config(fake), event_log=db, active_health_checks=False) as rt:
        with pytest.raises(RouteledgerError) as info:
            call(rt)
        assert isinstance(info.value, error), repr(info.value)
        rt.flush()
        assert fake.stats.requests == 0  # nothing bad was sent
    assert gaps(db) == []


def test_an_integral_priority_still_works(fake: FakeProvider) -> None:
    """A plain int priority is accepted and applied."""
    with Runtime.start(config(fake), active_health_checks=False) as rt:
        rt.set_provider_priority("a", 7)
        assert rt.get_provider("a").priority == 7


def test_a_stop_list_of_non_strings_is_refused(fake: FakeProvider) -> None:
    """stop=[1, 2] is a RequestError before anything is sent."""
    with Runtime.start(config(fake), active_health_checks=False) as rt:
        with pytest.raises(RequestError, match="stop"):
            rt.complete(request(stop=[1, 2]))
        assert fake.stats.requests == 0
