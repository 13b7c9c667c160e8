"""Invariants users check on a simulated run (:class:`~routeledger.testing.SimRun`).

Each ``assert_*`` helper raises :class:`InvariantViolated` (an ``AssertionError``, so pytest
shows it as a failed assertion) with a message naming what broke, and returns nothing when
the invariant holds:

- :func:`assert_no_request_lost`: every request of the workload was received and ended
  exactly once (completed, failed or rejected);
- :func:`assert_budgets_held`: no provider ever had more calls in flight than its
  ``max_concurrency``;
- :func:`assert_success_while_healthy`: of the requests that arrived while at least one
  capable provider answered every call, at least ``min_rate`` succeeded;
- :func:`assert_cost_under`: the run's cost (or each request's) stayed under a cap;
- :func:`assert_live_equals_replay`: the figures folded live equal those replayed from the
  stored events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routeledger.events import (
    AttemptStarted,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RequestRejected,
)

if TYPE_CHECKING:
    from routeledger.testing._sim import SimRun

__all__ = [
    "InvariantViolated",
    "assert_budgets_held",
    "assert_cost_under",
    "assert_live_equals_replay",
    "assert_no_request_lost",
    "assert_success_while_healthy",
]


class InvariantViolated(AssertionError):
    """A simulated run broke an invariant."""


def _fail(what: str, details: list[str]) -> None:
    shown = details[:5] + ([f"... and {len(details) - 5} more"] if len(details) > 5 else [])
    raise InvariantViolated(what + ":\n  " + "\n  ".join(shown))


def assert_no_request_lost(run: SimRun) -> None:
    """Check that every request of the workload was received and ended exactly once."""
    received: set[str] = set()
    ended: dict[str, int] = {}
    for event in run.events:
        if isinstance(event, RequestReceived):
            received.add(event.request_id)
        elif isinstance(event, (RequestCompleted, RequestFailed, RequestRejected)):
            ended[event.request_id] = ended.get(event.request_id, 0) + 1
    expected = len(run.scenario.arrivals) or run.scenario.requests
    problems = []
    if len(received | set(ended)) != expected:
        problems.append(f"{expected} request(s) in the workload, {len(received)} received")
    problems.extend(f"{r}: never ended" for r in sorted(received - set(ended)))
    problems.extend(f"{r}: ended {n} times" for r, n in sorted(ended.items()) if n != 1)
    if run.result.completed + run.result.failed != expected:
        problems.append(
            f"{run.result.completed} completed + {run.result.failed} failed != {expected}"
        )
    if problems:
        _fail("requests were lost", problems)


def assert_budgets_held(run: SimRun) -> None:
    """Check that no provider had more calls in flight than its ``max_concurrency``."""
    limits = {p.name: p.max_concurrency for p in run.scenario.config.providers}
    problems = [
        f"{name}: {n} in flight, limit {limits[name]}"
        for name, n in sorted(run.max_in_flight.items())
        if n > limits[name]
    ]
    problems.extend(
        f"{e.request_id} attempt {e.attempt}: {e.provider} at {e.in_flight} in flight, "
        f"limit {limits[e.provider]}"
        for e in run.events
        if isinstance(e, AttemptStarted) and e.in_flight > limits.get(e.provider, e.in_flight)
    )
    if problems:
        _fail("a concurrency budget was exceeded", problems)


def assert_success_while_healthy(
    run: SimRun, *, min_rate: float = 1.0, count_broken_streams: bool = False
) -> None:
    """Check the success rate of requests that arrived while a capable provider was healthy.

    Healthy is the ground truth the run was given (:meth:`SimRun.healthy_at`): no outage,
    no failures, no rate limit at the request's arrival. A stream that broke after its first
    chunk reached the caller (``StreamInterrupted``) is left out unless
    ``count_broken_streams``: the runtime never re-runs a stream silently, so no routing can
    save it, and a fault scenario with stream breaks would otherwise fail any floor.

    Args:
        run: the simulated run.
        min_rate: the least share of those requests that must succeed.
        count_broken_streams: count streams broken mid-way as failures.
    """
    config = run.scenario.config
    arrived: dict[str, bool] = {}
    outcome: dict[str, bool] = {}
    for event in run.events:
        if isinstance(event, RequestReceived):
            t = event.ts - run.origin
            arrived[event.request_id] = any(
                p.model(event.model) is not None and run.healthy_at(p.name, t)
                for p in config.providers
            )
        elif isinstance(event, RequestCompleted):
            outcome[event.request_id] = True
        elif isinstance(event, (RequestFailed, RequestRejected)):
            outcome[event.request_id] = False
            if not count_broken_streams and event.error == "StreamInterrupted":
                arrived[event.request_id] = False  # no routing could have saved it
    covered = [r for r, healthy in arrived.items() if healthy]
    if not covered:
        return
    failed = [r for r in covered if not outcome.get(r, False)]
    rate = 1 - len(failed) / len(covered)
    if rate < min_rate:
        errors = {
            e.request_id: f"{e.request_id}: {e.error}: {e.message}"
            for e in run.events
            if isinstance(e, RequestFailed)
        }
        _fail(
            f"{rate:.1%} of {len(covered)} request(s) succeeded while a provider was healthy "
            f"(at least {min_rate:.1%} expected)",
            [errors.get(r, f"{r}: never ended") for r in failed],
        )


def assert_cost_under(
    run: SimRun, *, total: float | None = None, per_request: float | None = None
) -> None:
    """Check that the run's cost stayed under ``total`` and each request's under ``per_request``."""
    problems = []
    spent = 0.0
    for event in run.events:
        if isinstance(event, RequestCompleted) and event.cost is not None:
            spent += event.cost
            if per_request is not None and event.cost > per_request:
                problems.append(f"{event.request_id}: cost {event.cost:.6f} > {per_request}")
    if total is not None and spent > total:
        problems.insert(0, f"total cost {spent:.6f} > {total}")
    if problems:
        _fail("a cost cap was exceeded", problems)


def assert_live_equals_replay(run: SimRun) -> None:
    """Check that the live figures equal those replayed from the stored events."""
    live, replayed = run.live, run.replayed()
    problems = []
    if live.metrics.snapshot() != replayed.metrics.snapshot():
        problems.append("metrics differ")
    if live.usage.report("all") != replayed.usage.report("all"):
        problems.append("usage differs")
    if live.ab.all_results() != replayed.ab.all_results():
        problems.append("A/B results differ")
    if problems:
        _fail("the live figures differ from the replayed ones", problems)
