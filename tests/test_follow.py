"""Following a shared log in one process: the writer folds others' events in position order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pykka
from support import wait_for

from routeledger import Runtime, RuntimeConfig, replay
from routeledger.actors._clock import VirtualClock
from routeledger.actors._follow import LogFollower
from routeledger.actors._writer import EventWriter, LogWriterActor
from routeledger.events import AttemptSucceeded, DaemonHeartbeat, Event, LogConfig
from routeledger.store import SQLiteStore
from routeledger.testing import FakeProvider


def attempt(provider: str, latency: float) -> AttemptSucceeded:
    """Return a successful attempt on ``provider``."""
    return AttemptSucceeded(
        ts=1_700_000_000.0,
        request_id=f"r-{provider}-{latency}",
        attempt=1,
        provider=provider,
        model="m",
        latency_ms=latency,
        input_tokens=3,
        output_tokens=2,
        cost=0.001 * latency,
    )


def writer_on(path: Path) -> EventWriter:
    """Return a writer with its own store on the log at ``path``."""
    return EventWriter(SQLiteStore(path), config=LogConfig(), clock=VirtualClock())


def test_a_writer_folds_the_others_events_before_its_own_batch_in_position_order(
    tmp_path: Path,
) -> None:
    """Two writers on one file: each one's projections equal the replay, positions in order."""
    path = tmp_path / "shared.sqlite"
    one, two = writer_on(path), writer_on(path)
    seen: list[tuple[list[int], bool]] = []
    one.on_folded = lambda batch, own: seen.append(([p for p, _ in batch], own))
    one.add([attempt("a", 10.0)])
    assert one.commit()
    two.add([attempt("b", 20.0), attempt("b", 30.0)])
    assert two.commit()
    one.add([attempt("a", 40.0)])
    assert one.commit()  # positions 4: the others' 2 and 3 are folded first
    assert seen == [([1], True), ([2, 3], False), ([4], True)]
    assert one.projections.contiguous and one.projections.position == 4
    two.catch_up()
    want = replay(str(path)).metrics.snapshot()
    assert one.projections.metrics.snapshot() == want
    assert two.projections.metrics.snapshot() == want
    one.store.close()
    two.store.close()


def test_catching_up_reads_past_the_head_only_once(tmp_path: Path) -> None:
    """A catch-up folds what is new, then nothing more until another commit."""
    path = tmp_path / "shared.sqlite"
    one, two = writer_on(path), writer_on(path)
    two.add([attempt("b", 5.0)])
    assert two.commit()
    assert one.catch_up() == 1
    assert one.catch_up() == 0
    assert one.followed == 1
    one.store.close()
    two.store.close()


def test_the_follower_thread_wakes_the_writer_when_another_writer_commits(
    tmp_path: Path,
) -> None:
    """Polling the head, the follower has the writer fold a foreign commit by itself."""
    path = tmp_path / "shared.sqlite"
    mine = writer_on(path)
    ref = LogWriterActor.start(mine)
    follower = LogFollower(mine.store, ref, lambda: mine.followed, poll_s=0.005).start()
    try:
        other = writer_on(path)
        other.add([attempt("b", 7.0)])
        assert other.commit()
        wait_for(lambda: mine.followed == 1, "the follower to fold the foreign event")
        other.store.close()
    finally:
        follower.stop()
        ref.stop(timeout=5)
        mine.store.close()


class _Waiting:
    """A store that announces commits (the PostgreSQL store's ``wait_for_commit``)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.calls = 0

    def wait_for_commit(self, after_position: int, timeout_s: float) -> int:
        self.calls += 1
        return self.store.last_position()

    def last_position(self) -> int:
        raise AssertionError("a store that announces commits is never polled")


def test_the_follower_waits_on_a_store_that_announces_commits(tmp_path: Path) -> None:
    """With ``wait_for_commit`` on the store, the follower calls it instead of polling."""
    store = SQLiteStore(tmp_path / "log.sqlite")
    waiting = _Waiting(store)
    told: list[object] = []

    class Writer(pykka.ThreadingActor):
        def on_receive(self, message: object) -> None:
            told.append(message)

    ref = Writer.start()
    follower = LogFollower(waiting, ref, lambda: 0).start()  # type: ignore[arg-type]
    try:
        store.append([attempt("a", 1.0)])
        wait_for(lambda: bool(told), "a FollowLog tell")
        assert waiting.calls >= 1
    finally:
        follower.stop()
        ref.stop(timeout=5)
        store.close()


def test_a_runtime_alone_on_its_log_writes_no_heartbeat_and_leads(
    tmp_path: Path,
    fake: FakeProvider,
    config_for: Callable[..., RuntimeConfig],
    events: Callable[..., Sequence[Event]],
    req: Callable[..., object],
) -> None:
    """Unshared, a runtime behaves as before: no heartbeat, whole budget, its own leader."""
    db = tmp_path / "alone.sqlite"
    with Runtime.start(config_for({"a": fake}), event_log=db) as rt:
        rt.complete(req())  # type: ignore[arg-type]
        rt.flush()
        assert rt.get_shared_log().leader and not rt.get_shared_log().shared
        assert rt._handles["a"].budget.share is None
    assert not events(db, "daemon.heartbeat")
    assert not [e for e in events(db) if isinstance(e, DaemonHeartbeat)]


def test_two_runtimes_in_one_process_share_a_log_and_agree_after_flush(
    tmp_path: Path,
    fake: FakeProvider,
    config_for: Callable[..., RuntimeConfig],
    req: Callable[..., object],
) -> None:
    """Two runtimes on one file: after both flush twice, both report the replayed figures."""
    db = tmp_path / "two.sqlite"
    config = config_for({"a": fake})
    with Runtime.start(config, event_log=db) as one, Runtime.start(config, event_log=db) as two:
        for _ in range(3):
            one.complete(req())  # type: ignore[arg-type]
            two.complete(req())  # type: ignore[arg-type]
        for rt in (one, two, one, two):
            rt.flush()
        want = replay(str(db)).metrics.snapshot()
        assert one.get_metrics() == want == two.get_metrics()
        assert want["a"].requests == 6
        wait_for(lambda: one.get_shared_log().peers == [two.daemon_id], "one to see two")
        assert one.get_shared_log().leader != two.get_shared_log().leader
