"""The event store contract, run against every implementation (Memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pg_support import fresh_url

from routeledger.events import (
    EVENT_TYPES,
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    ConfigurationApplied,
    Event,
    HealthProbed,
    RequestReceived,
    RouteDecided,
    StoreError,
)
from routeledger.store import (
    EventNotStorable,
    EventStore,
    MemoryStore,
    PostgresStore,
    SQLiteStore,
    StoredEvent,
    event_to_row,
    row_to_event,
)

# --- helpers ------------------------------------------------------------------------------


def _sample(t: msgspec.inspect.Type) -> Any:
    """Return a non-default value of the msgspec type ``t``."""
    if isinstance(t, msgspec.inspect.StrType | msgspec.inspect.AnyType):
        return "s"
    if isinstance(t, msgspec.inspect.BoolType):
        return True
    if isinstance(t, msgspec.inspect.IntType):
        return 7
    if isinstance(t, msgspec.inspect.FloatType):
        return 2.5
    if isinstance(t, msgspec.inspect.UnionType):
        return _sample(next(x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)))
    if isinstance(t, msgspec.inspect.ListType):
        return [_sample(t.item_type)]
    if isinstance(t, msgspec.inspect.DictType):
        return {"k": _sample(t.value_type)}
    raise AssertionError(f"no sample for {t}")


def every_event_type() -> list[Event]:
    """Return one event of every known tag, every field set to a non-default value."""
    events: list[Event] = []
    for index, cls in enumerate(EVENT_TYPES.values()):
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        fields = {f.name: _sample(f.type) for f in info.fields}
        fields["ts"] = 1000.0 + index
        if "request_id" in fields:
            fields["request_id"] = f"req-{index}"
        events.append(cls(**fields))
    return events


def probe(i: int) -> HealthProbed:
    """Return a small event that carries no request id."""
    return HealthProbed(ts=float(i), provider=f"p{i % 3}", healthy=i % 2 == 0, latency_ms=1.5)


def received(i: int, request_id: str) -> RequestReceived:
    """Return a small event of request ``request_id``."""
    return RequestReceived(ts=float(i), request_id=request_id, model="m")


class Counter:
    """A tiny projection: counts events per tag and remembers the positions it saw."""

    def __init__(self) -> None:
        self.by_tag: dict[str, int] = {}
        self.positions: list[int] = []

    def apply(self, position: int, event: Event) -> None:
        tag = str(event.__struct_config__.tag)
        self.by_tag[tag] = self.by_tag.get(tag, 0) + 1
        self.positions.append(position)


@contextlib.contextmanager
def _open(kind: str, directory: Path) -> Iterator[EventStore]:
    """Open an empty store of ``kind`` (PostgreSQL: in a fresh schema), closed afterwards."""
    with contextlib.ExitStack() as stack:
        if kind == "memory":
            s: EventStore = MemoryStore()
        elif kind == "sqlite":
            s = SQLiteStore(directory / "events.sqlite", busy_timeout_s=10.0)
        else:
            s = PostgresStore(stack.enter_context(fresh_url()))
        stack.callback(s.close)
        yield s


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """Every store implementation, empty, closed after the test."""
    with _open(request.param, tmp_path) as s:
        yield s


# --- the contract -------------------------------------------------------------------------


def test_store_satisfies_protocol(store: EventStore) -> None:
    """Each implementation is an EventStore and starts empty with no skipped rows."""
    assert isinstance(store, EventStore)
    assert store.last_position() == 0
    assert list(store.read()) == []
    assert store.skipped_unknown == 0


def test_round_trip_every_event_type(store: EventStore) -> None:
    """Every event type comes back equal, at the positions append returned."""
    events = every_event_type()
    assert len(events) == len(EVENT_TYPES)
    positions = store.append(events)
    assert positions == list(range(1, len(events) + 1))
    assert list(store.read()) == [StoredEvent(p, e) for p, e in zip(positions, events, strict=True)]


def test_positions_are_gapless_across_batches(store: EventStore) -> None:
    """Consecutive batches get consecutive positions; an empty batch gets none."""
    assert store.append([probe(1), probe(2)]) == [1, 2]
    assert store.append([]) == []
    assert store.append([probe(3)]) == [3]
    assert store.append([probe(i) for i in range(4, 8)]) == [4, 5, 6, 7]
    assert [s.position for s in store.read()] == list(range(1, 8))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            ConfigurationApplied(
                ts=1.0,
                config_version=1,
                digest="d",
                providers=[],
                strategy="s",
                summary={"x": object()},
            ),
            id="unencodable",
        ),
        pytest.param(
            AttemptSucceeded(
                ts=1.0, request_id="r", attempt=1, provider="p", model="m", latency_ms=math.nan
            ),
            id="nan-would-not-decode",
        ),
        pytest.param(
            RequestReceived(ts=1.0, request_id=42, model="m"),  # type: ignore[arg-type]  # bad
            id="wrong-field-type",
        ),
        pytest.param({"type": "health.probed"}, id="not-an-event"),
    ],
)
def test_batch_with_unstorable_event_writes_nothing(store: EventStore, bad: Any) -> None:
    """A batch with an event that cannot be stored fails whole, and the log goes on after."""
    store.append([probe(1)])
    with pytest.raises(EventNotStorable) as info:
        store.append([probe(2), probe(3), bad, probe(4)])
    assert info.value.index == 2
    assert store.last_position() == 1
    assert [s.position for s in store.read()] == [1]
    assert store.append([probe(5)]) == [2]


def test_concurrent_appends_from_threads_are_gapless(store: EventStore) -> None:
    """Batches from many threads get unique, gapless, contiguous positions in order."""
    threads, batches, size = 6, 25, 4
    barrier = threading.Barrier(threads)
    results: dict[int, list[list[int]]] = {t: [] for t in range(threads)}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait(timeout=10)
            for b in range(batches):
                batch = [received(i, f"t{t}-b{b}") for i in range(size)]
                results[t].append(store.append(batch))
                assert store.last_position() >= results[t][-1][-1]
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert not errors
    every = sorted(p for batches_ in results.values() for batch in batches_ for p in batch)
    assert every == list(range(1, threads * batches * size + 1))
    for t, batches_ in results.items():
        for b, batch in enumerate(batches_):
            assert batch == list(range(batch[0], batch[0] + size))
            stored = [s.event for s in store.read(batch[0], limit=size)]
            assert {getattr(e, "request_id", None) for e in stored} == {f"t{t}-b{b}"}


def test_read_from_position(store: EventStore) -> None:
    """A read starts at the given position; below 1 means the start, past the end is empty."""
    events = [probe(i) for i in range(1, 11)]
    store.append(events)
    assert [s.event for s in store.read(4)] == events[3:]
    assert [s.position for s in store.read(0)] == list(range(1, 11))
    assert list(store.read(11)) == []


def test_read_limit(store: EventStore) -> None:
    """A limit caps the number of events yielded; zero yields none; negative is refused."""
    store.append([probe(i) for i in range(1, 11)])
    assert [s.position for s in store.read(limit=3)] == [1, 2, 3]
    assert [s.position for s in store.read(9, limit=5)] == [9, 10]
    assert list(store.read(limit=0)) == []
    with pytest.raises(ValueError, match="limit"):
        store.read(limit=-1)


def test_read_request(store: EventStore) -> None:
    """read_request yields exactly one request's events, in position order."""
    store.append([received(1, "a"), probe(2), received(3, "b")])
    store.append(
        [received(4, "a"), RouteDecided(ts=5.0, request_id="a", strategy="s", candidates=["p"])]
    )
    assert [s.position for s in store.read_request("a")] == [1, 4, 5]
    assert [s.position for s in store.read_request("b")] == [3]
    assert list(store.read_request("nobody")) == []


def test_replay_into_counting_projection(store: EventStore) -> None:
    """replay feeds every event in order to the projection and returns that projection."""
    store.append([probe(1), received(2, "a"), probe(3)])
    projection = Counter()
    assert store.replay(projection) is projection
    assert projection.positions == [1, 2, 3]
    assert projection.by_tag == {"health.probed": 2, "request.received": 1}
    assert store.replay(Counter(), from_position=3).positions == [3]


def test_last_position(store: EventStore) -> None:
    """last_position follows appends and is 0 when empty."""
    assert store.last_position() == 0
    store.append([probe(1), probe(2)])
    assert store.last_position() == 2
    store.append([probe(3)])
    assert store.last_position() == 3


def test_read_sees_the_log_as_of_its_first_step(store: EventStore) -> None:
    """A read in progress does not see later appends; a read not yet begun does."""
    store.append([probe(i) for i in range(1500)])  # more than one fetch batch
    not_begun = store.read()
    running = store.read()
    assert next(running).position == 1
    store.append([probe(9999)])
    assert [s.position for s in running] == list(range(2, 1501))
    assert sum(1 for _ in not_begun) == 1501


def test_closed_store_refuses_everything(store: EventStore) -> None:
    """After close every call raises StoreError, and close is idempotent."""
    store.append([probe(1)])
    store.close()
    store.close()
    with pytest.raises(StoreError):
        store.append([probe(2)])
    with pytest.raises(StoreError):
        store.read()
    with pytest.raises(StoreError):
        store.read_request("a")
    with pytest.raises(StoreError):
        store.last_position()


# --- properties ---------------------------------------------------------------------------

_finite = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(max_size=8)
_events: st.SearchStrategy[Event] = st.one_of(
    st.builds(HealthProbed, ts=_finite, provider=_text, latency_ms=st.floats()),
    st.builds(RequestReceived, ts=_finite, request_id=_text, model=_text),
    st.builds(
        AttemptFailed, ts=_finite, request_id=_text, provider=_text, model=_text, error=_text
    ),
    st.builds(RouteDecided, ts=st.floats(), request_id=_text, strategy=_text),
    st.builds(CircuitStateChanged, ts=_finite, provider=_text, from_state=_text),
)


@settings(max_examples=150, deadline=None)
@given(_events)
def test_mapper_round_trips_or_refuses(event: Event) -> None:
    """A generated event either maps to a row that decodes equal, or is refused up front."""
    try:
        row = event_to_row(event)
    except EventNotStorable:
        # msgspec writes NaN and infinity as null, which does not decode back as a float.
        fields = msgspec.structs.asdict(event)
        floats = [v for v in fields.values() if isinstance(v, float)]
        floats += [v for v in fields.get("scores", {}).values() if isinstance(v, float)]
        assert any(not math.isfinite(v) for v in floats)
        return
    assert row.type == str(event.__struct_config__.tag)
    assert row.request_id == getattr(event, "request_id", None)
    assert row_to_event(1, row.data) == event


_finite_events = st.lists(
    st.builds(RequestReceived, ts=_finite, request_id=_text, model=_text), max_size=6
)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["memory", "sqlite", "postgres"]), st.lists(_finite_events, max_size=6))
def test_positions_strictly_increase(kind: str, batches: list[list[Event]]) -> None:
    """Whatever the batch sizes, positions strictly increase by one and match the reads."""
    with tempfile.TemporaryDirectory() as directory, _open(kind, Path(directory)) as store:
        seen: list[int] = []
        for batch in batches:
            seen += store.append(batch)
        assert seen == list(range(1, len(seen) + 1))
        assert [s.position for s in store.read()] == seen
        assert [s.event for s in store.read()] == [e for b in batches for e in b]
