"""The failover policy: the life of one request, from its first decision to its end.

:func:`run_request` is written once as a generator of *effects* so that the same policy runs
in two interpreters: :class:`routeledger._interpreter.ThreadedInterpreter` performs each
effect for real (an actor ask, an HTTP call, a sleep), and the simulation
(:mod:`routeledger.sim`) performs them on virtual time. The effects:

=====================  ======================================  ===========================
effect                 what the interpreter does               what it answers
=====================  ======================================  ===========================
:class:`Choose`        ask the router for a provider and slot  a Decision, Backoff or None
:class:`Send`          send the attempt (HTTP)                 a Response or OpenedStream
:class:`Relay`         pass a stream's chunks to the caller    a :class:`StreamEnd`
:class:`Pause`         wait (backoff or Retry-After)           nothing
:class:`AwaitCapacity` wait until a slot may be free           whether one may be
:class:`Record`        record an attempt's / request's end     nothing
=====================  ======================================  ===========================

An effect that fails is thrown back into the generator. The policy:

- at most ``max_attempts`` attempts in all, and ``max_attempts_per_provider`` on one
  provider, all before the request's deadline;
- an error type not named in ``retryable_errors`` ends the request; a ``BadRequest`` ends it
  everywhere (no provider will accept it), except a ``ContextLengthExceeded``, which moves
  to a model with a known, larger context window when there is one (``Choose.context_over``);
  an error whose type is not ``retryable`` (auth, quota, protocol) rules its provider out
  for this request but allows failover;
- untried providers come before retries of a provider already tried; a retry of the same
  provider waits its ``Retry-After`` when the provider sent one that fits the deadline and
  ``max_retry_after_s`` (otherwise that provider is ruled out), else an exponential backoff
  with full jitter (a backoff that would end past the deadline rules it out too); a rate
  limit that fits is waited out even past ``max_attempts_per_provider``, and the router
  marks the whole provider rate-limited (:mod:`~routeledger.actors._ratelimit`), so a
  request may also be told to wait (a ``Backoff``) before its first attempt: a wait that
  would end past the deadline ends the request at once;
- every attempt after a request's first is a retry and draws on the :class:`RetryBudget`
  of the provider it goes *to* (the router keeps one per provider, and leaves out the
  candidates whose budget is spent); a retry that succeeds costs nothing, one that fails
  stays spent for a window, and a provider earns room from the calls it serves. So failover
  to a provider that serves is not refused, while with every provider failing retries stop
  at ``retry_budget_min`` per provider and window (storm protection); only when no
  candidate has budget left does the request end (:class:`RetryBudgetExhausted`);
- when every candidate is saturated, the request waits for capacity (a bounded queue served
  by ``Request.priority``, then arrival: :mod:`~routeledger.actors._waitqueue`) until
  ``queue_timeout_s`` or its deadline; when every candidate is at its rpm/tpm limit, it waits
  for headroom (a :class:`Backoff` with ``rate_limited``) if that comes before its deadline;
- a 429 or 401 on one of a provider's several API keys retries that provider with its next
  key (the decision's ``spare_keys``) before another provider is tried;
- a stream may fail over only until its first chunk; once relayed, its end is recorded here
  like a completion's, and a break after the first chunk is a :class:`StreamInterrupted`.

Every :class:`Outcome` and :class:`RequestEnded` is built in this module, which is why it is
over 500 lines: the policy, its effect vocabulary and the retry budget it consumes are one
concept (a request's life), and both interpreters must find all of it in one place.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Generator, Hashable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from routeledger.actors._messages import Backoff, Decision, Outcome, RequestEnded, RouteQuery
from routeledger.events import (
    AllProvidersFailed,
    AllProvidersSaturated,
    AttemptCancelled,
    AuthenticationError,
    ContextLengthExceeded,
    DeadlineExceeded,
    NoCapableProvider,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    RequestCancelled,
    Response,
    RouteledgerError,
    RoutingError,
    RuntimeClosed,
    StreamCancelled,
    StreamInterrupted,
)

if TYPE_CHECKING:
    from routeledger.actors._clock import Clock
    from routeledger.events import FailoverConfig, StreamChunk, Usage

__all__ = [
    "AwaitCapacity",
    "Choose",
    "Effect",
    "OpenedStream",
    "Pause",
    "Record",
    "Relay",
    "RetryBudget",
    "RetryBudgetExhausted",
    "Send",
    "StreamEnd",
    "attempt_cancelled",
    "backoff_delay",
    "cancelled_end",
    "run_request",
    "start_request",
]


class Choose(NamedTuple):
    """Ask the router for a provider and a reserved slot.

    Answer: a ``Decision``; ``None`` when every candidate is saturated; a ``Backoff`` when
    every candidate is waiting until its ``not_before`` time (monotonic) to be retried.
    """

    attempt: int
    tried: dict[str, int]
    banned: frozenset[str]
    not_before: dict[str, float] = {}
    waiting: bool = False
    """The request asks again after waiting for capacity: its first saturated answer is
    already recorded, so another one is not (a release gives every waiter a turn)."""
    rekey: str | None = None
    """A provider whose key was just refused or rate-limited: try it first, with its next
    key, before another provider."""
    context_over: int | None = None
    """A provider refused the prompt as too long for a window of this many tokens (0: a
    window not configured): only a model with a known, larger window may take it now."""


class Send(NamedTuple):
    """Send the attempt. Answer: a ``Response``, or for a stream an :class:`OpenedStream`
    (its first chunk has arrived); raises ``ProviderError``.

    The interpreter releases the decision's slot when the call ends (for a stream: when the
    relay ends).
    """

    decision: Decision
    timeout_s: float


class OpenedStream(NamedTuple):
    """A stream whose first chunk has arrived: failover is no longer possible."""

    first: StreamChunk
    rest: Iterator[StreamChunk]
    ttft_ms: float


class Relay(NamedTuple):
    """Pass an opened stream's chunks on to the caller. Answer: a :class:`StreamEnd`."""

    stream: OpenedStream
    decision: Decision


class StreamEnd(NamedTuple):
    """How a relayed stream ended: whole (``response``), broken (``error``) or ``cancelled``
    by the caller; ``usage`` and ``cost`` are what its chunks reported."""

    response: Response | None = None
    error: ProviderError | None = None
    cancelled: bool = False
    usage: Usage | None = None
    cost: float | None = None
    reason: str | None = None
    """Why the runtime stopped a cancelled stream (see :func:`cancelled_end`); ``None``
    when the caller closed it."""


class Pause(NamedTuple):
    """Wait (backoff or Retry-After) before a retry; no slot is held."""

    seconds: float


class AwaitCapacity(NamedTuple):
    """Wait until some slot may be free. Answer: False if the wait timed out or was refused."""

    timeout_s: float


class Record(NamedTuple):
    """Record how an attempt (and, with ``ended``, the whole request) ended."""

    outcome: Outcome | None
    ended: RequestEnded | None


Effect = Choose | Send | Relay | Pause | AwaitCapacity | Record

DEADLINE_SLACK_S = 1e-6

KEY_ERRORS = (RateLimited, AuthenticationError, QuotaExceeded)
"""Errors that speak of the key used, not of the provider (see ``actors._keys``)."""


class RetryBudget:
    """The retries one provider may still take: a budget per *target*, as Envoy keeps one per
    upstream cluster.

    A retry sent *to* this provider spends from this budget while it is in flight; when it
    succeeds it costs nothing (it served a request, the one thing a retry is for), and when it
    fails it stays spent for ``window_s``. What may be spent at once is ``minimum`` or
    ``ratio`` of the calls the provider *served* in the last ``window_s``, whichever is more.
    A healthy provider earns room from its own traffic and its successful retries are free,
    so failover to it is not refused; a provider that serves nothing accepts ``minimum``
    failed retries a window at most. When every provider fails, the retries a runtime makes
    are therefore bounded by ``minimum`` per provider and window, however many requests
    arrive: that is the storm protection. First attempts never draw on a budget.

    Why not one budget for the whole runtime (as before): a flapping provider's failures
    spent it, and then failover to the healthy providers was refused too (issue 12).

    Each budget belongs to one :class:`~routeledger.actors.Router`, which is only ever called
    from one thread at a time, so it takes no lock. Times are monotonic seconds.
    """

    def __init__(self, ratio: float, minimum: int, window_s: float) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.window_s = window_s
        self._served: deque[float] = deque()
        self._wasted: deque[float] = deque()
        # In insertion (= time) order, so the oldest is first: a retry whose end never comes
        # (its caller gave up) stops holding the budget after one window.
        self._in_flight: dict[Hashable, float] = {}

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        for q in (self._served, self._wasted):
            while q and q[0] < horizon:
                q.popleft()
        while self._in_flight:
            key, started = next(iter(self._in_flight.items()))
            if started >= horizon:
                break
            del self._in_flight[key]

    def allowance(self, now: float) -> float:
        """Return how many retries may be spent at once now (in flight or failed)."""
        self._trim(now)
        return max(self.minimum, self.ratio * len(self._served))

    def spent(self, now: float) -> int:
        """Return the retries in flight plus those that failed within the window."""
        self._trim(now)
        return len(self._in_flight) + len(self._wasted)

    def allows(self, now: float) -> bool:
        """Return whether one more retry may be sent to this provider now."""
        return self.spent(now) < self.allowance(now)

    def spend(self, key: Hashable, now: float) -> None:
        """Note that retry ``key`` (a request id and attempt) was sent to this provider."""
        self._trim(now)
        self._in_flight[key] = now

    def served(self, now: float) -> None:
        """Note that the provider served a call (any attempt): it earns ``ratio`` of a retry."""
        self._trim(now)
        self._served.append(now)

    def settle(self, key: Hashable, now: float, *, wasted: bool) -> None:
        """Note that retry ``key`` ended; ``wasted`` (it failed) keeps it spent for a window."""
        self._trim(now)
        self._in_flight.pop(key, None)
        if wasted:
            self._wasted.append(now)

    def held(self) -> int:
        """Return how many times the budget holds (bounded by one window of traffic)."""
        return len(self._served) + len(self._wasted) + len(self._in_flight)


class RetryBudgetExhausted(RoutingError):
    """No candidate's retry budget allows another attempt (the policy ends the request)."""

    def __init__(self, request_id: str) -> None:
        super().__init__("retry budget exhausted", request_id=request_id)


def backoff_delay(tries: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Return a full-jitter exponential backoff: uniform in [0, min(max, base * 2**(tries-1))]."""
    return rng.uniform(0.0, min(max_s, base_s * 2 ** max(0, tries - 1)))


def start_request(
    query: RouteQuery,
    *,
    failover: FailoverConfig,
    timeouts: dict[str, float],
    clock: Clock,
    rng: random.Random,
) -> Generator[Effect, Any, Response | None]:
    """Start the policy for a request arriving now: its deadline is the request's own, else
    ``failover.default_deadline_s`` (none when both are unset)."""
    now = clock.monotonic()
    budget_s = query.request.deadline or failover.default_deadline_s
    return run_request(
        query,
        failover=failover,
        timeouts=timeouts,
        clock=clock,
        rng=rng,
        started=now,
        deadline_at=now + budget_s if budget_s else math.inf,
    )


def _interrupted(error: ProviderError, provider: str, request_id: str) -> StreamInterrupted:
    """Return the error a caller sees for a stream that broke after its first chunk."""
    err = (
        error
        if isinstance(error, StreamInterrupted)
        else StreamInterrupted(
            f"stream broke after its first chunk: {type(error).__name__}: {error.message}",
            provider=provider,
            request_id=request_id,
            status=error.status,
        )
    )
    err.provider = err.provider or provider
    err.request_id = err.request_id or request_id
    if err is not error:
        err.__cause__ = error
    return err


def attempt_cancelled(reason: str, provider: str, request_id: str) -> AttemptCancelled:
    """Return the error of an attempt stopped for ``reason`` (``cancelled``/``shutdown``)."""
    what = "the runtime shut down" if reason == "shutdown" else "the request was cancelled"
    error = AttemptCancelled(f"{what} during the attempt", provider=provider, request_id=request_id)
    error.reason = reason
    return error


def cancelled_end(reason: str, request_id: str) -> RoutingError:
    """Return the error a request stopped for ``reason`` ends with: never a provider's."""
    if reason == "shutdown":
        return RuntimeClosed(
            "the runtime closed before the request ended (shutdown)", request_id=request_id
        )
    return RequestCancelled("the caller cancelled the request", request_id=request_id)


def run_request(
    query: RouteQuery,
    *,
    failover: FailoverConfig,
    timeouts: dict[str, float],
    clock: Clock,
    rng: random.Random,
    started: float,
    deadline_at: float,
) -> Generator[Effect, Any, Response | None]:
    """Run one request to its end; return its Response (``None`` for a stream: its chunks
    went to the caller through :class:`Relay`).

    Raises the error the caller should see: ``BadRequest`` as the provider gave it, a
    :class:`RoutingError` when nothing could serve it, :class:`AllProvidersFailed` when the
    attempts ran out, :class:`DeadlineExceeded` when time did, :class:`StreamInterrupted`
    when a stream broke after its first chunk.
    """
    request = query.request
    rid = request.request_id
    errors: list[ProviderError] = []
    tried: dict[str, int] = {}
    banned: set[str] = set()
    not_before: dict[str, float] = {}
    attempt = 0
    rekey: str | None = None
    context_over: int | None = None
    queue_until: float | None = None
    max_attempts = failover.max_attempts if failover.enabled else 1
    retryable_names = frozenset(failover.retryable_errors)

    def failed_providers() -> tuple[str, ...]:
        return tuple(e.provider or "" for e in errors)

    def ended(response: Response | None, error: Exception | None, now: float) -> RequestEnded:
        total_ms = (now - started) * 1000.0
        return RequestEnded(response, error, attempt, total_ms, failed_providers())

    def outcome(decision: Decision, latency_ms: float, **fields: Any) -> Outcome:
        return Outcome(
            request_id=rid,
            attempt=attempt,
            provider=decision.route.provider,
            model=decision.model.name,
            latency_ms=latency_ms,
            ts=clock.time(),
            probe=decision.probe,
            key=decision.key,
            **fields,
        )

    def fail(error: Exception) -> Generator[Effect, Any, Any]:
        yield Record(None, ended(None, error, clock.monotonic()))
        raise error

    def relay(
        opened: OpenedStream, decision: Decision, attempt_started: float
    ) -> Generator[Effect, Any, None]:
        """Relay an opened stream and record how it ended (raising if it broke)."""
        provider = decision.route.provider
        end: StreamEnd = yield Relay(opened, decision)
        now = clock.monotonic()
        latency_ms = (now - attempt_started) * 1000.0
        seen = {"usage": end.usage, "cost": end.cost, "ttft_ms": opened.ttft_ms, "stream": True}
        if end.response is not None:
            response = msgspec.structs.replace(
                end.response, latency_ms=latency_ms, attempts=attempt, request_id=rid
            )
            yield Record(outcome(decision, latency_ms, **seen), ended(response, None, now))
            return
        if end.cancelled:
            # The caller's choice says nothing about the provider: not a failed provider.
            cancelled = StreamCancelled(
                "the caller stopped reading the stream"
                if end.reason is None
                else f"the stream was stopped ({end.reason})",
                provider=provider,
                request_id=rid,
            )
            final = cancelled if end.reason is None else cancelled_end(end.reason, rid)
            yield Record(
                outcome(decision, latency_ms, error=cancelled, **seen),
                ended(None, final, now),
            )
            if end.reason is not None:
                raise final
            return
        assert end.error is not None
        err = _interrupted(end.error, provider, rid)
        broken = ended(None, err, now)
        broken = broken._replace(failed_providers=(*broken.failed_providers, provider))
        yield Record(outcome(decision, latency_ms, error=err, **seen), broken)
        raise err

    while True:
        now = clock.monotonic()
        # An attempt timed out at the deadline ends a hair before it in floating point:
        # a deadline less than DEADLINE_SLACK_S away has passed.
        if now >= deadline_at - DEADLINE_SLACK_S:
            yield from fail(
                DeadlineExceeded(f"deadline passed after {attempt} attempt(s)", request_id=rid)
            )
        if attempt >= max_attempts:
            yield from fail(AllProvidersFailed(errors, request_id=rid))
        try:
            decision: Decision | Backoff | None = yield Choose(
                attempt + 1,
                dict(tried),
                frozenset(banned),
                dict(not_before),
                queue_until is not None,
                rekey,
                context_over,
            )
        except RetryBudgetExhausted:
            yield from fail(
                AllProvidersFailed(
                    errors,
                    request_id=rid,
                    message=f"retry budget exhausted after {attempt} attempt(s)",
                )
            )
        except RouteledgerError as exc:
            stopped = isinstance(exc, RequestCancelled | RuntimeClosed)
            if (
                errors
                and isinstance(errors[-1], ContextLengthExceeded)
                and isinstance(exc, NoCapableProvider)
            ):
                # No larger window to fail over to: the provider's refusal says it best.
                exc = errors[-1]
            elif errors and isinstance(exc, RoutingError) and not stopped:
                exc = AllProvidersFailed(
                    errors,
                    request_id=rid,
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
                        request_id=rid,
                    )
                )
            continue
        if isinstance(decision, Backoff):
            if decision.rate_limited and clock.monotonic() + decision.seconds >= deadline_at:
                yield from fail(
                    AllProvidersSaturated(
                        "every candidate provider is at its rate limit (rpm/tpm) until after "
                        f"the deadline ({decision.provider!r} has headroom in "
                        f"{decision.seconds:.3g} s)",
                        request_id=rid,
                    )
                )
            if clock.monotonic() + decision.seconds >= deadline_at - DEADLINE_SLACK_S:
                # A provider-wide Retry-After can end past the deadline (a backoff of this
                # request's own never does): waiting would only end in DeadlineExceeded.
                why = (
                    f"every candidate is waiting; {decision.provider!r} is first free in "
                    f"{decision.seconds:.3g} s, after the request's deadline"
                )
                if errors:
                    yield from fail(AllProvidersFailed(errors, request_id=rid, message=why))
                yield from fail(DeadlineExceeded(why, request_id=rid))
            # No slot is held while waiting: the provider's budget serves others meanwhile.
            yield Pause(decision.seconds)
            continue
        queue_until = None
        rekey = None
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
                value = yield Send(decision, timeout)
            except ProviderError as exc:
                error = exc
            else:
                if request.stream:
                    yield from relay(value, decision, attempt_started)
                    return None
                now = clock.monotonic()
                latency_ms = (now - attempt_started) * 1000.0
                response: Response = msgspec.structs.replace(
                    value, latency_ms=latency_ms, attempts=attempt, request_id=rid
                )
                yield Record(
                    outcome(decision, latency_ms, usage=response.usage, cost=response.cost),
                    ended(response, None, now),
                )
                return response
        finally:
            if not called:
                decision.budget.release()

        # The attempt failed. A timeout that used up the deadline ends the request at the top
        # of the loop, as DeadlineExceeded.
        if error.provider is None:
            error.provider = provider
        if error.request_id is None:
            error.request_id = rid
        now = clock.monotonic()
        if isinstance(error, AttemptCancelled):
            # Stopped by us, not failed: no failed provider, and no other one is tried.
            final = cancelled_end(error.reason, rid)
            yield Record(
                outcome(decision, (now - attempt_started) * 1000.0, error=error),
                ended(None, final, now),
            )
            raise final
        errors.append(error)
        yield Record(outcome(decision, (now - attempt_started) * 1000.0, error=error), None)
        if not error.failover:
            yield from fail(error)
        if isinstance(error, ContextLengthExceeded):
            if attempt >= max_attempts:
                yield from fail(error)  # no attempt left for a larger window: as before
            # Not a retry of the same prompt on a like model: a move to a larger window only.
            banned.add(provider)
            window = decision.model.context_window or 0
            context_over = window if context_over is None else max(context_over, window)
            continue
        if type(error).__name__ not in retryable_names:
            yield from fail(AllProvidersFailed(errors, request_id=rid))
        if decision.spare_keys and isinstance(error, KEY_ERRORS):
            # The key, not the provider, was refused or rate-limited: the next key first.
            rekey = provider
            continue
        # A rate limit that says how long is waited out (within max_retry_after_s and the
        # deadline) even past max_attempts_per_provider: with the default of one attempt a
        # provider, a lone provider's Retry-After would otherwise end the request at once.
        waits_out = (
            isinstance(error, RateLimited)
            and error.retry_after_s is not None
            and 0 < error.retry_after_s <= failover.max_retry_after_s
            and now + error.retry_after_s < deadline_at
        )
        if not error.retryable or (
            tried[provider] >= failover.max_attempts_per_provider and not waits_out
        ):
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
