"""Leadership, capacity leases and shared circuits, on a virtual clock (no processes)."""

from __future__ import annotations

from routeledger.actors._budget import Budget
from routeledger.actors._circuit import CLOSED, OPEN
from routeledger.actors._clock import VirtualClock
from routeledger.actors._health import HealthMonitor
from routeledger.actors._lease import SharedLog, daemon_id, grants
from routeledger.events import (
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    DaemonHeartbeat,
    Event,
    HealthConfig,
    RequestReceived,
)

ME = "00000000000000000002-1-bb"
OLDER = "00000000000000000001-1-aa"
YOUNGER = "00000000000000000003-1-cc"


def beat(daemon: str, claims: dict[str, int], *, stopping: bool = False) -> DaemonHeartbeat:
    """Return another runtime's heartbeat."""
    return DaemonHeartbeat(ts=0.0, daemon=daemon, ttl_s=3.0, claims=claims, stopping=stopping)


def shared(limit: int = 6, mode: str = "lease") -> tuple[SharedLog, Budget, VirtualClock]:
    """Return a coordinator (no thread), its one budget and its clock."""
    clock = VirtualClock()
    budget = Budget(limit)
    sent: list[list[Event]] = []
    log = SharedLog(
        daemon=ME, mode=mode, ttl_s=3.0, clock=clock, budgets={"p": budget}, append=sent.append
    )
    return log, budget, clock


def own_beat(log: SharedLog) -> None:
    """Fold this runtime's own committed heartbeat."""
    log.on_folded([(1, DaemonHeartbeat(ts=0.0, daemon=ME, ttl_s=3.0))], True)


def test_ids_sort_in_start_order_and_grants_split_the_limit_with_the_rest_to_the_first() -> None:
    """Ids start with the start time; a limit of 4 among three gives 2, 1, 1."""
    assert daemon_id(1.0) < daemon_id(2.0)
    ids = [OLDER, ME, YOUNGER]
    assert [grants(4, ids, d) for d in ids] == [2, 1, 1]


def test_a_runtime_alone_leads_and_uses_its_whole_budget() -> None:
    """Before any other runtime's event, nothing is shared: the whole limit, leadership."""
    log, budget, _ = shared()
    own_beat(log)
    assert log.leader() and not log.shared and budget.share is None


def test_the_oldest_live_runtime_leads() -> None:
    """A live runtime with a smaller id takes the lead; a younger one does not."""
    log, _, _ = shared()
    log.on_folded([(1, beat(YOUNGER, {"p": 0}))], False)
    assert log.leader()
    log.on_folded([(2, beat(OLDER, {"p": 0}))], False)
    assert not log.leader()


def test_a_share_is_the_grant_less_what_the_others_still_claim() -> None:
    """With another runtime holding 5 of 6 in flight, this one may use only 1 of its 3."""
    log, budget, _ = shared(limit=6)
    log.on_folded([(1, beat(OLDER, {"p": 5}))], False)
    own_beat(log)
    assert budget.cap == 1
    log.on_folded([(2, beat(OLDER, {"p": 3}))], False)
    assert budget.cap == 3


def test_a_dead_runtimes_share_returns_when_its_lease_expires() -> None:
    """A runtime whose heartbeat stops counts until its ttl has passed, then frees its share."""
    log, budget, clock = shared(limit=6)
    log.on_folded([(1, beat(OLDER, {"p": 3}))], False)
    own_beat(log)
    assert budget.cap == 3
    clock.advance(1.5)
    own_beat(log)
    log.apply_shares()
    assert budget.cap == 3  # still within its lease
    clock.advance(1.6)
    own_beat(log)
    log.apply_shares()
    assert budget.cap == 6 and log.leader()


def test_a_stopping_runtime_frees_its_share_at_once() -> None:
    """A last heartbeat that says ``stopping`` takes the runtime out immediately."""
    log, budget, _ = shared(limit=6)
    log.on_folded([(1, beat(OLDER, {"p": 3}))], False)
    own_beat(log)
    log.on_folded([(2, beat(OLDER, {}, stopping=True))], False)
    assert budget.cap == 6 and log.peers() == []


def test_a_runtime_known_only_by_its_events_is_assumed_to_use_its_grant() -> None:
    """Another runtime's events before its first heartbeat: this one keeps only its grant."""
    log, budget, _ = shared(limit=6)
    event = RequestReceived(ts=0.0, request_id="r", model="m")
    log.on_folded([(1, event)], False)
    assert log.shared and budget.cap == 3


def test_a_runtime_whose_own_heartbeat_is_stale_takes_no_new_slot() -> None:
    """Its heartbeat not committed for two thirds of the lease, a runtime stops reserving."""
    log, budget, clock = shared(limit=6)
    log.on_folded([(1, beat(OLDER, {"p": 0}))], False)
    own_beat(log)
    clock.advance(2.1)
    log.on_folded([(2, beat(OLDER, {"p": 0}))], False)
    assert budget.cap == 0 and not budget.try_acquire()


def test_local_mode_leaves_every_budget_whole() -> None:
    """``shared_concurrency = "local"``: shared or not, each runtime uses the whole limit."""
    log, budget, _ = shared(limit=6, mode="local")
    log.on_folded([(1, beat(OLDER, {"p": 6}))], False)
    assert log.shared and budget.share is None and budget.try_acquire()


def failure(provider: str = "p") -> AttemptFailed:
    """Return another runtime's failed attempt (counted against health)."""
    return AttemptFailed(
        ts=0.0,
        request_id="r",
        attempt=1,
        provider=provider,
        model="m",
        error="ProviderTimeout",
        counts_against_health=True,
    )


def test_a_followers_breaker_counts_others_failures_but_stays_where_the_log_says() -> None:
    """The follower's evidence grows, its state moves only by an adopted transition."""
    monitor = HealthMonitor(HealthConfig(failure_threshold=2, cooldown_s=30.0), ["p"])
    assert monitor.observe_recorded(failure(), 0.0) == []
    (t,) = monitor.observe_recorded(failure(), 0.0)
    assert t.to_state == OPEN
    monitor.keep("p")  # a follower does not record: back to the recorded state
    breaker = monitor.breakers["p"]
    assert breaker.state == CLOSED and breaker.consecutive_failures == 2
    opened = CircuitStateChanged(
        ts=1_000.0, provider="p", from_state=CLOSED, to_state=OPEN, reason="x", trips=1
    )
    adopted = monitor.adopt(opened, wall_now=1_010.0, mono_now=5.0)
    assert adopted is not None and adopted.to_state == OPEN
    assert breaker.state == OPEN and breaker.open_until == 25.0  # 20 s of cooldown left
    monitor.keep("p")
    assert breaker.state == OPEN


def test_a_starting_runtime_learns_the_live_runtimes_from_the_heartbeats_at_the_logs_tail() -> None:
    """Heartbeats younger than their lease make a new runtime shared before it serves."""
    log, budget, clock = shared(limit=6)
    now = clock.time()
    live = DaemonHeartbeat(ts=now - 1.0, daemon=OLDER, ttl_s=3.0, claims={"p": 5})
    gone = DaemonHeartbeat(ts=now - 10.0, daemon=YOUNGER, ttl_s=3.0, claims={"p": 6})
    log.prime([gone, RequestReceived(ts=now, request_id="r", model="m"), live])
    assert log.shared and log.peers() == [OLDER] and not log.leader()
    assert budget.cap == 1
    clock.advance(2.1)  # the live one's lease ends 3 s after its heartbeat
    own_beat(log)
    log.apply_shares()
    assert log.peers() == [] and budget.cap == 6


def test_a_log_last_written_by_a_runtime_alone_does_not_make_the_next_one_shared() -> None:
    """No heartbeat at the tail (a restart after a lone runtime): nothing is shared."""
    log, budget, clock = shared(limit=6)
    log.prime([RequestReceived(ts=clock.time(), request_id="r", model="m")])
    assert not log.shared and budget.share is None and log.leader()


def test_a_runtime_known_by_its_events_counts_no_more_once_it_is_named_and_gone() -> None:
    """The unnamed runtime's assumed grant ends with its first heartbeat, not its ttl."""
    log, budget, _ = shared(limit=6)
    log.on_folded([(1, RequestReceived(ts=0.0, request_id="r", model="m"))], False)
    own_beat(log)
    assert budget.cap == 3
    log.on_folded([(2, beat(OLDER, {"p": 3})), (3, beat(OLDER, {}, stopping=True))], False)
    assert budget.cap == 6


def test_another_runtimes_attempt_through_a_half_open_circuit_is_its_probe() -> None:
    """Started after the circuit went half-open it closes it; started before, it does not."""
    monitor = HealthMonitor(HealthConfig(failure_threshold=1, cooldown_s=1.0), ["p"])
    (opened,) = monitor.observe_recorded(failure(), 0.0)
    monitor.recorded_now("p", opened, 100.0)
    (half,) = monitor.poll(2.0)[0][1:]
    monitor.recorded_now("p", half, 102.0)

    def success(ts: float) -> AttemptSucceeded:
        return AttemptSucceeded(
            ts=ts, request_id="r", attempt=1, provider="p", model="m", latency_ms=500.0
        )

    assert monitor.observe_recorded(success(102.4), 2.5) == []  # started at 101.9: too early
    (closed,) = monitor.observe_recorded(success(103.0), 3.0)
    assert closed.to_state == CLOSED
