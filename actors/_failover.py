"""The life of one request: attempts, failover, retries, backoff, deadline.

:func:`drive` is written once as a generator of *effects* (decide, call, sleep, wait for
capacity, report) so that the same policy runs in two executors: the threaded runtime
performs each effect for real (an actor ask, an HTTP call, a sleep), and the simulation
performs them on virtual time. The policy:

- at most ``max_attempts`` attempts in all, and ``max_attempts_per_provider`` on one
  provider, all before the request's deadline;
- an error type not named in ``retryable_errors`` ends the request; a ``BadRequest`` ends it
  everywhere (no provider will accept it); an error whose type is not ``retryable`` (auth,
  quota, protocol) rules its provider out for this request but allows failover;
- untried providers come before retries of a provider already tried; a retry of the same
  provider waits its ``Retry-After`` when the provider sent one that fits the deadline and
  ``max_retry_after_s`` (otherwise that provider is ruled out), else an exponential backoff
  with full jitter (a backoff that would end past the deadline rules it out too);
- when every candidate is saturated, the request waits for capacity (a bounded queue) until
  ``queue_timeout_s`` or its deadline.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from routeledger.actors._messages import Backoff, Decision, Outcome
from routeledger.actors._router import Final, RouteQuery, _RetryBudgetExhausted
from routeledger.events import (
    AllProvidersFailed,
    AllProvidersSaturated,
    DeadlineExceeded,
    ProviderError,
    Response,
    RouteledgerError,
    RoutingError,
)

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.events import FailoverConfig

__all__ = [
    "AwaitCapacity",
    "Call",
    "Decide",
    "Effect",
    "Report",
    "Sleep",
    "Success",
    "backoff_delay",
    "drive",
]


class Decide(NamedTuple):
    """Ask the supervisor for a provider and a reserved slot.

    Answer: a ``Decision``; ``None`` when every candidate is saturated; a ``Backoff`` when
    every candidate is waiting until its ``not_before`` time (monotonic) to be retried.
    """

    attempt: int
    tried: dict[str, int]
    banned: frozenset[str]
    not_before: dict[str, float] = {}


class Call(NamedTuple):
    """Send the attempt. Answer: the provider's result; raises ``ProviderError``.

    The executor releases the decision's slot when the call ends (for a stream: when the
    stream ends).
    """

    decision: Decision
    timeout_s: float


class Sleep(NamedTuple):
    """Wait (backoff or Retry-After) before a retry."""

    seconds: float


class AwaitCapacity(NamedTuple):
    """Wait until some slot may be free. Answer: False if the wait timed out or was refused."""

    timeout_s: float


class Report(NamedTuple):
    """Tell the supervisor how an attempt (and, with ``final``, the request) ended."""

    outcome: Outcome | None
    final: Final | None


Effect = Decide | Call | Sleep | AwaitCapacity | Report


class Success(NamedTuple):
    """A request's successful attempt, returned by :func:`drive` for streams."""

    value: Any
    decision: Decision
    attempt_started: float
    failed_providers: tuple[str, ...]
    started: float = 0.0
    """When the request started (monotonic): its total latency counts from here."""


DEADLINE_SLACK_S = 1e-6


def backoff_delay(tries: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Return a full-jitter exponential backoff: uniform in [0, min(max, base * 2**(tries-1))]."""
    return rng.uniform(0.0, min(max_s, base_s * 2 ** max(0, tries - 1)))


def drive(
    query: RouteQuery,
    *,
    failover: FailoverConfig,
    timeouts: dict[str, float],
    clock: Clock,
    rng: random.Random,
    started: float,
    deadline_at: float,
) -> Generator[Effect, Any, Any]:
    """Run one request to its end; return the Response (or a :class:`Success` for streams).

    Raises the error the caller should see: ``BadRequest`` as the provider gave it, a
    :class:`RoutingError` when nothing could serve it, :class:`AllProvidersFailed` when the
    attempts ran out, :class:`DeadlineExceeded` when time did.
    """
    request = query.request
    errors: list[ProviderError] = []
    tried: dict[str, int] = {}
    banned: set[str] = set()
    not_before: dict[str, float] = {}
    attempt = 0
    queue_until: float | None = None
    max_attempts = failover.max_attempts if failover.enabled else 1
    retryable_names = frozenset(failover.retryable_errors)

    def fail(error: Exception) -> Generator[Effect, Any, Any]:
        yield Report(
            None,
            Final(
                None,
                error,
                attempt,
                (clock.monotonic() - started) * 1000.0,
                tuple(e.provider or "" for e in errors),
            ),
        )
        raise error

    while True:
        now = clock.monotonic()
        # An attempt timed out at the deadline ends a hair before it in floating point:
        # a deadline less than DEADLINE_SLACK_S away has passed.
        if now >= deadline_at - DEADLINE_SLACK_S:
            yield from fail(
                DeadlineExceeded(
                    f"deadline passed after {attempt} attempt(s)", request_id=request.request_id
                )
            )
        if attempt >= max_attempts:
            yield from fail(AllProvidersFailed(errors, request_id=request.request_id))
        try:
            decision: Decision | Backoff | None = yield Decide(
                attempt + 1, dict(tried), frozenset(banned), dict(not_before)
            )
        except _RetryBudgetExhausted:
            yield from fail(
                AllProvidersFailed(
                    errors,
                    request_id=request.request_id,
                    message=f"retry budget exhausted after {attempt} attempt(s)",
                )
            )
        except RouteledgerError as exc:
            if errors and isinstance(exc, RoutingError):
                exc = AllProvidersFailed(
                    errors,
                    request_id=request.request_id,
                    message=f"{len(errors)} attempt(s) failed and no provider is left: "
                    f"{exc.message}",
                )
            yield from fail(exc)
        if decision is None:
            now = clock.monotonic()
            if queue_until is None:
                queue_until = min(deadline_at, now + failover.queue_timeout_s)
            freed = now < queue_until and (yield AwaitCapacity(queue_until - now))
            if not freed:
                yield from fail(
                    AllProvidersSaturated(
                        "every candidate provider's concurrency budget is full "
                        f"(waited {failover.queue_timeout_s:g} s at most)",
                        request_id=request.request_id,
                    )
                )
            continue
        if isinstance(decision, Backoff):
            # No slot is held while waiting: the provider's budget serves others meanwhile.
            yield Sleep(decision.seconds)
            continue
        queue_until = None
        attempt += 1
        provider = decision.route.provider
        tried[provider] = tried.get(provider, 0) + 1
        called = False
        try:
            remaining = deadline_at - clock.monotonic()
            timeout = min(timeouts.get(provider, 60.0), remaining)
            attempt_started = clock.monotonic()
            called = True
            try:
                value = yield Call(decision, timeout)
            except ProviderError as exc:
                error = exc
            else:
                if request.stream:
                    failed = tuple(e.provider or "" for e in errors)
                    return Success(value, decision, attempt_started, failed, started)
                now = clock.monotonic()
                latency_ms = (now - attempt_started) * 1000.0
                response: Response = msgspec.structs.replace(
                    value, latency_ms=latency_ms, attempts=attempt, request_id=request.request_id
                )
                outcome = Outcome(
                    request_id=request.request_id,
                    attempt=attempt,
                    provider=provider,
                    model=decision.model.name,
                    latency_ms=latency_ms,
                    ts=clock.time(),
                    usage=response.usage,
                    cost=response.cost,
                    probe=decision.probe,
                )
                failed = tuple(e.provider or "" for e in errors)
                total_ms = (now - started) * 1000.0
                yield Report(outcome, Final(response, None, attempt, total_ms, failed))
                return response
        finally:
            if not called:
                decision.budget.release()

        # The attempt failed. A timeout that used up the deadline ends the request at the top
        # of the loop, as DeadlineExceeded.
        if error.provider is None:
            error.provider = provider
        if error.request_id is None:
            error.request_id = request.request_id
        errors.append(error)
        now = clock.monotonic()
        yield Report(
            Outcome(
                request_id=request.request_id,
                attempt=attempt,
                provider=provider,
                model=decision.model.name,
                latency_ms=(now - attempt_started) * 1000.0,
                ts=clock.time(),
                error=error,
                probe=decision.probe,
            ),
            None,
        )
        if not error.failover:
            yield from fail(error)
        if type(error).__name__ not in retryable_names:
            yield from fail(AllProvidersFailed(errors, request_id=request.request_id))
        if not error.retryable or tried[provider] >= failover.max_attempts_per_provider:
            banned.add(provider)
            continue
        if error.retry_after_s is not None:
            if (
                error.retry_after_s > failover.max_retry_after_s
                or now + error.retry_after_s >= deadline_at
            ):
                banned.add(provider)
                continue
            not_before[provider] = now + error.retry_after_s
        else:
            delay = backoff_delay(
                tried[provider],
                base_s=failover.backoff_base_s,
                max_s=failover.backoff_max_s,
                rng=rng,
            )
            # Like a Retry-After that does not fit: sleeping past the deadline would only
            # hold the slot and then call with no time left.
            if now + delay >= deadline_at:
                banned.add(provider)
                continue
            not_before[provider] = now + delay
