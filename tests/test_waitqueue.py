"""The wait queue: waiters for capacity served by priority, then arrival; a full queue refuses
the lowest priority first; end to end through a runtime on a loopback fake provider."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from routeledger import AllProvidersSaturated, FailoverConfig, Message, Request, Runtime
from routeledger.actors._waitqueue import WaitQueue
from routeledger.sim import SimBehaviour, Simulation, scenario_from_dict
from routeledger.testing import Behaviour, FakeProvider

Fakes = Callable[..., list[FakeProvider]]


def _waiter(
    queue: WaitQueue, priority: int, order: list[int], *, max_queue: int = 100
) -> threading.Thread:
    """Start a thread that waits its turn once, notes ``priority`` in ``order``, ends its turn."""
    ticket = queue.ticket(priority)

    def run() -> None:
        if queue.wait_turn(ticket, queue.generation, 5.0, max_queue=max_queue):
            order.append(priority)
            queue.done(ticket)
        else:
            order.append(-1000 - priority)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_release_gives_turns_by_priority_then_arrival() -> None:
    """Waiters take their turns highest priority first, and in arrival order within one."""
    queue = WaitQueue()
    order: list[int] = []
    threads = []
    for n, priority in enumerate((0, 5, 1, 5, 0), start=1):
        threads.append(_waiter(queue, priority, order))
        wait_for(lambda n=n: queue.waiting == n, "the waiter to queue")
    queue.notify()
    for t in threads:
        t.join(timeout=5)
    assert order == [5, 5, 1, 0, 0]


def test_a_full_queue_refuses_the_lowest_priority_waiter_for_a_higher_newcomer() -> None:
    """With the queue full, a higher-priority newcomer takes the lowest waiter's place."""
    queue = WaitQueue()
    order: list[int] = []
    low = _waiter(queue, 0, order, max_queue=2)
    wait_for(lambda: queue.waiting == 1)
    mid = _waiter(queue, 3, order, max_queue=2)
    wait_for(lambda: queue.waiting == 2)
    high = _waiter(queue, 9, order, max_queue=2)
    low.join(timeout=5)
    assert order == [-1000]  # refused early, at once
    assert queue.waiting == 2
    same = _waiter(queue, 3, order, max_queue=2)  # no higher than the lowest (3): refused
    same.join(timeout=5)
    assert order == [-1000, -1003]
    queue.notify()
    for t in (mid, high):
        t.join(timeout=5)
    assert order == [-1000, -1003, 9, 3]


def test_a_turn_that_ends_passes_to_the_next_waiter() -> None:
    """Each waiter gets one turn per release, so a release no one could use is not lost."""
    queue = WaitQueue()
    order: list[int] = []
    threads = [_waiter(queue, p, order) for p in (2, 1)]
    wait_for(lambda: queue.waiting == 2)
    queue.notify()
    for t in threads:
        t.join(timeout=5)
    assert order == [2, 1]
    assert queue.waiting == 0


def test_waiting_requests_are_served_by_priority_end_to_end(
    fakes: Fakes, config_for: Any, req: Any, db: Path, events: Any
) -> None:
    """With one slot held, a later high-priority request is served before earlier low ones."""
    # The holder's call is slow (time to queue the others); the queued ones are quick.
    (only,) = fakes(1, Behaviour(latency_ms=600))
    cfg = config_for(
        {"only": only},
        per_provider={"only": {"max_concurrency": 1}},
        failover=FailoverConfig(queue_timeout_s=10.0),
    )
    with Runtime.start(cfg, event_log=db) as rt, ThreadPoolExecutor(5) as pool:
        signal = rt._signal
        holder = pool.submit(rt.complete, req())
        wait_for(lambda: rt.get_active_requests("only") == 1)
        futures: list[Future[Any]] = []
        for n, priority in enumerate((0, 0, 7), start=1):
            futures.append(pool.submit(rt.complete, req(priority=priority)))
            wait_for(lambda n=n: signal.waiting == n, "the request to queue")
        only.set_behaviour(Behaviour(latency_ms=1))
        assert not holder.done()  # all three queued while the slot was held
        holder.result(timeout=10)
        ids = [f.result(timeout=10).request_id for f in futures]
        rt.flush()
    started = [e.request_id for e in events(db, "attempt.started") if e.request_id in ids]
    assert started == [ids[2], ids[0], ids[1]]


def test_a_full_queue_refuses_a_low_priority_request_early_end_to_end(
    fakes: Fakes, config_for: Any, req: Any, db: Path
) -> None:
    """A high-priority request arriving at a full queue makes a low-priority one fail at once."""
    # The holder must still hold the slot when the high-priority request arrives, even on a
    # loaded machine: 2 s (600 ms was not always enough under a parallel load).
    (only,) = fakes(1, Behaviour(latency_ms=2000))
    cfg = config_for(
        {"only": only},
        per_provider={"only": {"max_concurrency": 1}},
        failover=FailoverConfig(queue_timeout_s=10.0, max_queue=1),
    )
    with Runtime.start(cfg, event_log=db) as rt, ThreadPoolExecutor(3) as pool:
        holder = pool.submit(rt.complete, req())
        wait_for(lambda: rt.get_active_requests("only") == 1)
        low = pool.submit(rt.complete, req(priority=0))
        wait_for(lambda: rt._signal.waiting == 1)
        only.set_behaviour(Behaviour(latency_ms=1))
        high = pool.submit(rt.complete, req(priority=1))
        with pytest.raises(AllProvidersSaturated):
            low.result(timeout=5)  # at once, not at its 10 s queue timeout
        assert high.result(timeout=10).provider == "only"
        assert holder.result(timeout=10).provider == "only"


def _sim(max_queue: int) -> Simulation:
    s = scenario_from_dict(
        {
            "providers": [{"name": "only", "models": [{"name": "m"}], "max_concurrency": 1}],
            "failover": {"max_queue": max_queue, "queue_timeout_s": 30.0},
            "simulation": {"requests": 0},
        }
    )
    s.behaviours["only"] = SimBehaviour(latency_ms=100, latency_sigma=0)
    return Simulation(s, seed=0)


def _sim_request(i: int, priority: int) -> Request:
    return Request(
        model="m",
        messages=[Message(role="user", content="x")],
        request_id=f"q{i}",
        priority=priority,
    )


def test_the_simulation_serves_waiters_by_priority_then_arrival() -> None:
    """In the simulation, a slot freed goes to the highest-priority waiter, then the oldest."""
    sim = _sim(max_queue=10)
    for i, priority in enumerate((0, 0, 1, 3, 1)):
        sim.submit(_sim_request(i, priority))
    sim.run()
    started = [e.request_id for _, e in sim.store.read() if type(e).__name__ == "AttemptStarted"]
    assert started == ["q0", "q3", "q2", "q4", "q1"]


def test_the_simulation_refuses_the_lowest_priority_waiter_when_the_queue_is_full() -> None:
    """In the simulation, a full queue refuses its lowest-priority waiter for a higher one."""
    sim = _sim(max_queue=2)
    for i, priority in enumerate((0, 0, 2, 1, 0)):
        sim.submit(_sim_request(i, priority))
    result = sim.run()
    started = [e.request_id for _, e in sim.store.read() if type(e).__name__ == "AttemptStarted"]
    assert started == ["q0", "q2", "q3"]
    assert result.errors == {"AllProvidersSaturated": 2}
