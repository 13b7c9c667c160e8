"""Shared fixtures of the runtime tests: actor cleanup, loopback fake providers, configs, events."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from routeledger import Message, ModelSpec, ProviderConfig, Request, RuntimeConfig
from routeledger.events import Event
from routeledger.store import SQLiteStore
from routeledger.testing import Behaviour, FakeProvider

MODEL = "fake-model"
CALLBACK_TIMEOUT_S = 5.0


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    """Stop every actor a test left running, so no test sees another's actors."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=10)


@pytest.fixture(autouse=True)
def _local_gaps_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the gaps of URL logs (PostgreSQL) in the test's tmp dir, never in ``~``."""
    monkeypatch.setenv("ROUTELEDGER_GAPS_DIR", str(tmp_path / "state"))


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    """Run one healthy fake provider (seed 0)."""
    with FakeProvider(Behaviour(), seed=0) as server:
        yield server


@pytest.fixture
def fakes() -> Iterator[Callable[..., list[FakeProvider]]]:
    """Return a starter of fake providers: ``fakes(n, behaviour=None)``; all stop at teardown."""
    started: list[FakeProvider] = []

    def start(n: int = 1, behaviour: Behaviour | None = None) -> list[FakeProvider]:
        out = []
        for _ in range(n):
            fake = FakeProvider(behaviour or Behaviour(latency_ms=1), seed=len(started))
            fake.start()
            started.append(fake)
            out.append(fake)
        return out

    yield start
    for fake in started:
        fake.stop()


def provider_config(name: str, fake: FakeProvider | str, **kwargs: Any) -> ProviderConfig:
    """Return an OpenAI-format provider on ``fake`` (or a base URL) serving ``fake-model``."""
    url = fake if isinstance(fake, str) else fake.url + "/v1"
    model_kw = {
        k: kwargs.pop(k)
        for k in ("input_per_mtok", "output_per_mtok", "capabilities")
        if k in kwargs
    }
    model_kw.setdefault("input_per_mtok", 1.0)
    model_kw.setdefault("output_per_mtok", 2.0)
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("kind", "openai")
    return ProviderConfig(
        name=name, base_url=url, models=[ModelSpec(name=MODEL, **model_kw)], **kwargs
    )


@pytest.fixture
def config_for() -> Callable[..., RuntimeConfig]:
    """Return a builder: ``config_for({"a": fake, ...}, per_provider={"a": {...}}, **runtime)``.

    Providers are named by the dict's keys, in order; ``per_provider`` overrides their fields.
    """

    def build(
        fakes: dict[str, FakeProvider | str],
        *,
        per_provider: dict[str, dict[str, Any]] | None = None,
        **runtime: Any,
    ) -> RuntimeConfig:
        per = per_provider or {}
        providers = [provider_config(n, f, **dict(per.get(n, {}))) for n, f in fakes.items()]
        runtime.setdefault("seed", 0)
        return RuntimeConfig(providers=providers, **runtime)

    return build


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Return the path of a fresh SQLite event log."""
    return tmp_path / "events.sqlite"


def read_events(path: Path) -> list[Event]:
    """Return every committed event of the log at ``path`` (flush the runtime first)."""
    store = SQLiteStore(path, readonly=True)
    try:
        return [event for _, event in store.read()]
    finally:
        store.close()


@pytest.fixture
def events() -> Callable[..., list[Any]]:
    """Return a reader: ``events(path, tag=None)`` gives the log's events (of one wire tag)."""

    def read(path: Path, tag: str | None = None, **fields: Any) -> list[Any]:
        out = []
        for event in read_events(path):
            if tag is not None and type(event).__struct_config__.tag != tag:
                continue
            if any(getattr(event, k, None) != v for k, v in fields.items()):
                continue
            out.append(event)
        return out

    return read


def make_request(**kwargs: Any) -> Request:
    """Return a one-message request for ``fake-model``."""
    kwargs.setdefault("max_tokens", 8)
    return Request(model=MODEL, messages=[Message(role="user", content="hello")], **kwargs)


@pytest.fixture
def req() -> Callable[..., Request]:
    """Return the request builder (``req(temperature=0.5, ...)``)."""
    return make_request


class Collector:
    """Collects callback events from the dispatcher thread; ``wait(n)`` blocks with a timeout."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, event: Any) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def wait(self, n: int = 1, timeout: float = CALLBACK_TIMEOUT_S) -> list[Any]:
        """Wait until at least ``n`` events arrived; return them all."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.items) >= n, timeout)
            return list(self.items)


@pytest.fixture
def collector() -> Callable[[], Collector]:
    """Return a factory of callback collectors."""
    return Collector


def settle(rt: Any) -> None:
    """Wait until every outcome told so far reached the statistics, the health actor and the log.

    Outcomes travel by ``tell`` (caller -> provider actor -> health actor -> supervisor), so
    a test asks each actor in that order: an ask is answered after every earlier message.
    """
    from routeledger.actors._provider import PING

    for handle in rt._handles.values():
        if handle.actor_ref is not None and handle.actor_ref.is_alive():
            handle.actor_ref.ask(PING, timeout=CALLBACK_TIMEOUT_S)
    rt.get_provider_health()
    rt.flush()


@pytest.fixture
def settled() -> Callable[[Any], None]:
    """Return :func:`settle`."""
    return settle


def closed_port_url() -> str:
    """Return a loopback base URL on which nothing listens (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def refused_url() -> str:
    """Return a base URL whose connections are refused."""
    return closed_port_url()
