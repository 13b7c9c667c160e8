"""Deterministic simulation: the real routing, failover, health and log-writer logic on
virtual time, against simulated providers.

Use it to plan capacity or to test a configuration before production: describe providers
(latency distribution, failure rate, rate limit with ``Retry-After``, outages that start and
end, concurrency limit) and a workload, run it, and read the metrics replayed from the event
log it writes. Nothing sleeps and no thread is started: thousands of requests take seconds,
and the same seed reproduces the same event log byte for byte.

What runs is the runtime's own code: :class:`~routeledger.actors.Router` (the supervisor's
logic), the failover policy :func:`~routeledger.actors._failover.run_request`, the
:class:`~routeledger.actors.HealthMonitor` circuits and the
:class:`~routeledger.actors.EventWriter`. Only the actors' threads are replaced by a
discrete-event loop (the twin of :class:`routeledger._interpreter.ThreadedInterpreter`), and
the HTTP calls by :class:`SimBehaviour` descriptions. Streams are simulated too: a share of
the requests (``stream_share``) stream, their first chunk arrives after ``ttft_ms``, and a
share of them (``stream_break_rate``) break after it. A simulated 429 carries its
``Retry-After`` like a real one, so the router marks the provider rate-limited until then
(``provider.rate_limited``) and routes around it or waits for it, exactly as the runtime does.

A scenario is a TOML file::

    [simulation]
    requests = 2000          # how many requests arrive
    rate_per_s = 50.0        # Poisson arrivals
    model = "m"
    max_tokens = 64

    strategy = "latency"      # any RuntimeConfig field: failover, health, pools, ...

    [[providers]]
    name = "fast"
    models = [{ name = "m", input_per_mtok = 0.5, output_per_mtok = 1.5 }]
    max_concurrency = 8
    [providers.sim]
    latency_ms = 120         # median of a log-normal
    latency_sigma = 0.3
    fail_rate = 0.01
    rate_limit_per_s = 30    # admitted calls a second; beyond, 429 with Retry-After
    outages = [{ start_s = 10, end_s = 25, status = 503 }]
    ttft_ms = 40             # a stream's first chunk (default: a fifth of the latency)
    stream_break_rate = 0.0  # streams that break after their first chunk
    rpm = 1200               # the provider's own requests (tpm: tokens) per minute; 429 beyond

A provider's ``rpm``/``tpm`` in its table (not under ``sim``) is the runtime's own limit
(token buckets in the router), and waiting requests are served by ``Request.priority``.

A scenario may also carry a recorded trace (``routeledger scenario`` writes one):
``[simulation] arrivals`` (the requests, by arrival time; ``requests`` and ``rate_per_s``
are then unused) and ``[providers.sim] phases`` (piecewise behaviour over time: from each
phase's ``start_s`` on, its latency, its error shares by status and its rate limit).

The module is over 500 lines: the event loop performs every effect of the policy, like its
threaded twin; the scenario format already lives in :mod:`routeledger._scenario`.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import os
import random
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any

import msgspec

from routeledger._scenario import (
    Arrival,
    Outage,
    Phase,
    PhaseError,
    Scenario,
    SimBehaviour,
    behaviour_at,
    load_scenario,
    scenario_from_dict,
)
from routeledger.actors._buckets import TokenBucket
from routeledger.actors._budget import Budget
from routeledger.actors._clock import VirtualClock
from routeledger.actors._failover import (
    AwaitCapacity,
    Choose,
    Effect,
    OpenedStream,
    Pause,
    Record,
    Relay,
    Send,
    StreamEnd,
    start_request,
)
from routeledger.actors._health import HealthMonitor
from routeledger.actors._keys import fingerprint
from routeledger.actors._messages import Decision, RouteQuery
from routeledger.actors._router import Router
from routeledger.actors._stats import StatsTracker
from routeledger.actors._writer import EventWriter
from routeledger.events import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    ConfigurationApplied,
    Message,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Request,
    Requirements,
    Response,
    RouteledgerError,
    RuntimeConfig,
    Secret,
    StreamChunk,
    Usage,
    validate_config,
)
from routeledger.events._projections import Projections
from routeledger.store import EventStore, MemoryStore, open_store

__all__ = [
    "Arrival",
    "Outage",
    "Phase",
    "PhaseError",
    "Scenario",
    "SimBehaviour",
    "SimResult",
    "Simulation",
    "load_scenario",
    "scenario_from_dict",
    "simulate",
]


class SimResult(msgspec.Struct, kw_only=True):
    """What a run produced."""

    completed: int
    failed: int
    errors: dict[str, int]
    duration_s: float
    events: int
    projections: Projections | None = None


class _Task:
    """One simulated request: its policy and what it is waiting for."""

    __slots__ = ("first", "gen", "parks", "query", "stream_ends_s", "waiting")

    def __init__(self, query: RouteQuery, gen: Generator[Effect, Any, Any]) -> None:
        self.query = query
        self.gen = gen
        self.first = True
        self.waiting = False
        # Counts the waits for capacity, so that the timeout of an earlier wait never ends
        # a later one.
        self.parks = 0
        self.stream_ends_s = 0.0
        """For an opened stream: how long after its first chunk it ends."""


class Simulation:
    """Runs a :class:`Scenario` on virtual time.

    Args:
        scenario: What to simulate.
        seed: Seeds every random choice (routing, providers, arrivals).
        store: Where events go (default: in memory).
    """

    def __init__(
        self, scenario: Scenario, *, seed: int = 0, store: EventStore | None = None
    ) -> None:
        validate_config(scenario.config, environ={})
        self.scenario = scenario
        self.config = scenario.config
        self.clock = VirtualClock()
        self.store = store if store is not None else MemoryStore()
        self.writer = EventWriter(self.store, config=self.config.log, clock=self.clock)
        master = random.Random(seed)
        self._route_rng = random.Random(master.getrandbits(64))
        self._provider_rng = random.Random(master.getrandbits(64))
        self._arrival_rng = random.Random(master.getrandbits(64))
        self._retry_rng = random.Random(master.getrandbits(64))
        # Drawn last, so that adding streams changed no earlier draw of a seed.
        self._stream_rng = random.Random(master.getrandbits(64))
        self.budgets = {p.name: Budget(p.max_concurrency) for p in self.config.providers}
        self.trackers = {p.name: StatsTracker() for p in self.config.providers}
        self.health = HealthMonitor(self.config.health, [p.name for p in self.config.providers])
        self._timeouts = {p.name: p.timeout_s for p in self.config.providers}
        self.streams_broken = 0
        self._calls: dict[str, deque[float]] = {p.name: deque() for p in self.config.providers}
        # Each simulated provider's own rpm/tpm buckets, made at its first call.
        self._own_limits: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}
        self.over_limit = 0
        """Calls a simulated provider refused for its own rpm/tpm limit."""
        self.writer.add(
            [
                ConfigurationApplied(
                    ts=self.clock.time(),
                    config_version=1,
                    digest="simulation",
                    providers=[p.name for p in self.config.providers],
                    strategy=self.config.strategy,
                    # Only what the folds read (the spend budgets), and only when set: the
                    # simulation's log stays what it was without them.
                    summary={"budgets": msgspec.to_builtins(self.config.budgets)}
                    if self.config.budgets
                    else {},
                )
            ]
        )
        self.router = Router(
            self.config,
            budgets=self.budgets,
            stats={n: self._stats_reader(n) for n in self.trackers},
            clock=self.clock,
            rng=self._route_rng,
            emit=self.writer.add,
            keys=_simulated_keys(self.config),
        )
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._parked: list[_Task] = []
        self._arrivals_scheduled = False
        self._draining = False
        self.completed = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = dict.fromkeys(self.budgets, 0)
        self.on_step: Callable[[Simulation], None] | None = None

    def _stats_reader(self, name: str) -> Callable[[], Any]:
        tracker = self.trackers[name]
        return lambda: tracker.stats

    # -- the event loop ---------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Schedule ``action`` at simulated monotonic time ``when``."""
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def run(self, *, until: float | None = None) -> SimResult:
        """Run the scenario to its end (or to ``until``) and commit every event.

        With ``until``, simulated time ends at ``until`` even if nothing happens before it
        (circuits whose cooldown ends meanwhile move to half-open).
        """
        if not self._arrivals_scheduled:
            self._arrivals_scheduled = True
            self._schedule_arrivals()
        while self._queue:
            when, _, action = self._queue[0]
            if until is not None and when > until:
                break
            heapq.heappop(self._queue)
            self.clock.set(when)
            for provider, t in self.health.poll(when):
                self.router.apply_health(provider, t)
            action()
            if self.writer.full:
                self.writer.commit(force=True)
            if self.on_step is not None:
                self.on_step(self)
        if until is not None and until > self.clock.monotonic():
            self.clock.set(until)
            for provider, t in self.health.poll(until):
                self.router.apply_health(provider, t)
        self.writer.commit(force=True)
        return SimResult(
            completed=self.completed,
            failed=self.failed,
            errors=dict(sorted(self.errors.items())),
            duration_s=self.clock.monotonic(),
            events=self.writer.projections.events,
            projections=self.writer.projections,
        )

    def _schedule_arrivals(self) -> None:
        s = self.scenario
        if s.arrivals:
            self.schedule_trace(iter(s.arrivals))
            return
        t = 0.0
        for i in range(s.requests):
            t += self._arrival_rng.expovariate(s.rate_per_s)
            self.at(t, functools.partial(self._arrive, i))

    def schedule_trace(self, arrivals: Iterator[Arrival]) -> None:
        """Take the workload from recorded ``arrivals`` (in time order) instead of the scenario.

        The iterator is read one arrival ahead of simulated time, so a long trace streamed
        from a log never sits in memory whole. Call it before :meth:`run`.
        """
        self._arrivals_scheduled = True
        counter = itertools.count()

        def next_arrival() -> None:
            arrival = next(arrivals, None)
            if arrival is not None:
                i = next(counter)
                self.at(max(arrival.at_s, self.clock.monotonic()), lambda: arrive(i, arrival))

        def arrive(i: int, arrival: Arrival) -> None:
            next_arrival()
            self.submit_arrival(i, arrival)

        next_arrival()

    def submit_arrival(self, i: int, arrival: Arrival) -> None:
        """Start the ``i``-th request of a recorded trace now."""
        request = Request(
            model=arrival.model,
            # About four characters a token (Request.estimated_input_tokens), so the
            # simulated request is as large as the recorded one.
            messages=[Message(role="user", content="x" * (4 * arrival.input_tokens - 4))],
            max_tokens=arrival.max_tokens,
            request_id=f"sim-{i:07d}",
            deadline=arrival.deadline_s,
            stream=arrival.stream,
            session_id=arrival.session_id,
            metadata=dict(arrival.metadata or {}),
        )
        requirements = (
            Requirements(require_capabilities=frozenset(arrival.capabilities))
            if arrival.capabilities
            else None
        )
        preferred = arrival.preferred_provider
        if preferred is not None and preferred not in self.budgets:
            preferred = None
        self.submit(request, requirements=requirements, preferred_provider=preferred)

    def _arrive(self, i: int) -> None:
        self.submit(self.make_request(i))

    def make_request(self, i: int) -> Request:
        """Return the ``i``-th request of the workload (ids are deterministic)."""
        s = self.scenario
        stream = s.stream_share > 0 and self._stream_rng.random() < s.stream_share
        return Request(
            model=s.model,
            messages=[Message(role="user", content="x" * s.prompt_chars)],
            max_tokens=s.max_tokens,
            request_id=f"sim-{i:07d}",
            deadline=s.deadline_s,
            stream=stream,
            session_id=f"session-{i % s.sessions}" if s.sessions else None,
            metadata=dict(s.metadata),
        )

    def submit(self, request: Request, **routing: Any) -> None:
        """Start a request now (``routing``: preferred_provider, requirements, pool, ab_test)."""
        query = RouteQuery(request, **routing)
        gen = start_request(
            query,
            failover=self.config.failover,
            timeouts=self._timeouts,
            clock=self.clock,
            rng=self._retry_rng,
        )
        self._step(_Task(query, gen), None, None)

    def _step(self, task: _Task, send: Any, throw: BaseException | None) -> None:
        """Advance a request's driver until it waits for simulated time."""
        while True:
            try:
                effect = task.gen.throw(throw) if throw is not None else task.gen.send(send)
            except StopIteration:
                self.completed += 1
                return
            except RouteledgerError as exc:
                self.failed += 1
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                return
            send = throw = None
            match effect:
                case Choose(attempt, tried, banned, not_before, waiting, rekey, context_over):
                    try:
                        if task.first:
                            self.router.received(task.query)
                            task.first = False
                        send = self.router.decide(
                            task.query,
                            attempt=attempt,
                            tried=tried,
                            banned=banned,
                            not_before=not_before,
                            again=waiting,
                            rekey=rekey,
                            context_over=context_over,
                        )
                        if isinstance(send, Decision):
                            p = send.route.provider
                            self.max_in_flight[p] = max(
                                self.max_in_flight[p], send.budget.in_flight
                            )
                    except RouteledgerError as exc:
                        throw = exc
                case Send(decision, timeout_s):
                    self._call(task, decision, timeout_s)
                    return
                case Relay(_, decision):
                    self._relay(task, decision)
                    return
                case Pause(seconds):
                    self.at(self.clock.monotonic() + seconds, lambda: self._step(task, None, None))
                    return
                case AwaitCapacity(timeout_s):
                    if not self._make_room(task):
                        send = False
                        continue
                    task.waiting = True
                    task.parks += 1
                    self._parked.append(task)
                    self.at(
                        self.clock.monotonic() + timeout_s,
                        functools.partial(self._wake, task, False, park=task.parks),
                    )
                    return
                case Record():
                    self._record(effect, task.query)

    def _make_room(self, task: _Task) -> bool:
        """Return whether ``task`` may wait: the queue has room, or a waiter of lower
        priority is refused to make some (as the threaded runtime's wait queue does)."""
        if len(self._parked) < self.config.failover.max_queue:
            return True
        priority = task.query.request.priority
        lowest = min(reversed(self._parked), key=lambda t: t.query.request.priority, default=None)
        if lowest is None or lowest.query.request.priority >= priority:
            return False
        lowest.parks += 1  # its queue timeout no longer applies
        lowest.waiting = False
        self._parked.remove(lowest)
        self.at(self.clock.monotonic(), functools.partial(self._step, lowest, False, None))
        return True

    def _wake(self, task: _Task, freed: bool, *, park: int | None = None) -> None:
        if not task.waiting or (park is not None and park != task.parks):
            return
        task.waiting = False
        self._parked.remove(task)
        self._step(task, freed, None)

    def _released(self) -> None:
        # One drain per instant, not one wake per parked request per release: under overload
        # hundreds wait, and waking them all on every release made a run quadratic.
        if self._parked and not self._draining:
            self._draining = True
            self.at(self.clock.monotonic(), self._drain)

    def _drain(self) -> None:
        """Wake waiting requests, highest priority first and then oldest first, while some
        provider has a free slot (as the threaded runtime's wait queue serves them)."""
        self._draining = False
        parked = self._parked
        if any(t.query.request.priority for t in parked):
            parked = sorted(parked, key=lambda t: -t.query.request.priority)  # stable: FIFO
        for task in list(parked):
            if all(b.in_flight >= b.limit for b in self.budgets.values()):
                break
            self._wake(task, True)

    def _record(self, effect: Record, query: RouteQuery) -> None:
        outcome = effect.outcome
        if outcome is not None:
            self.trackers[outcome.provider].record(outcome)
            for t in self.health.observe(outcome, self.clock.monotonic()):
                self.router.apply_health(outcome.provider, t)
        self.router.finished(outcome, effect.ended, query)

    @property
    def parked(self) -> int:
        """Return how many requests wait for capacity."""
        return len(self._parked)

    def set_behaviour(self, provider: str, behaviour: SimBehaviour) -> None:
        """Change how ``provider`` answers from now on (calls in flight keep their answer)."""
        if provider not in self.budgets:
            raise ConfigError([f"unknown provider {provider!r}"])
        self.scenario.behaviours[provider] = behaviour

    # -- simulated providers ----------------------------------------------------------------

    def _call(self, task: _Task, decision: Decision, timeout_s: float) -> None:
        name = decision.route.provider
        behaviour = self.scenario.behaviours.get(name, SimBehaviour())
        now = self.clock.monotonic()
        rng = self._provider_rng
        if behaviour.phases:
            behaviour = behaviour_at(behaviour, now, rng.random())
        request = task.query.request
        error: ProviderError | None = None
        latency_s = behaviour.latency_ms / 1000.0
        if behaviour.latency_sigma > 0:
            latency_s *= math.exp(rng.gauss(0.0, behaviour.latency_sigma))
        outage = next((o for o in behaviour.outages if o.start_s <= now < o.end_s), None)
        calls = self._calls[name]
        while calls and calls[0] <= now - 1.0:
            calls.popleft()
        key_status = (
            behaviour.key_statuses[decision.key]
            if decision.key < len(behaviour.key_statuses)
            else 0
        )
        if outage is not None:
            error = _error_for(outage.status, name, retry_after=None)
            latency_s = behaviour.fail_latency_ms / 1000.0
        elif key_status:
            error = _error_for(key_status, name, retry_after=behaviour.retry_after_s)
            latency_s = behaviour.fail_latency_ms / 1000.0
        elif (
            behaviour.rate_limit_per_s is not None and len(calls) >= behaviour.rate_limit_per_s
        ) or self._over_own_limit(name, behaviour, request, now):
            error = RateLimited(
                "rate limited", provider=name, status=429, retry_after_s=behaviour.retry_after_s
            )
            latency_s = behaviour.fail_latency_ms / 1000.0
        else:
            # Only admitted calls use up the rate: a refused one costs the provider nothing,
            # so a client that keeps knocking is still served at the advertised rate.
            calls.append(now)
            if rng.random() < behaviour.fail_rate:
                error = _error_for(
                    behaviour.fail_status, name, retry_after=behaviour.fail_retry_after_s
                )
                latency_s = behaviour.fail_latency_ms / 1000.0
        answer_s = latency_s
        if request.stream and error is None:
            # A stream answers (and is timed) at its first chunk; the rest follows the relay.
            ttft_s = latency_s / 5 if behaviour.ttft_ms is None else behaviour.ttft_ms / 1000.0
            answer_s = min(ttft_s, latency_s)
            task.stream_ends_s = latency_s - answer_s
        if answer_s > timeout_s:
            answer_s = timeout_s
            error = ProviderTimeout("no answer in time", provider=name)
        response = _response(decision, request, behaviour)

        def done() -> None:
            if error is not None:
                decision.budget.release()
                self._released()
                self._step(task, None, error)
            elif request.stream:  # the slot stays held until the relay ends
                first = StreamChunk(provider=name, model=decision.model.name)
                self._step(task, OpenedStream(first, iter(()), answer_s * 1000.0), None)
            else:
                decision.budget.release()
                self._released()
                self._step(task, response, None)

        self.at(now + answer_s, done)

    def _over_own_limit(
        self, name: str, behaviour: SimBehaviour, request: Request, now: float
    ) -> bool:
        """Charge a call to the simulated provider's own rpm/tpm; return whether it is over."""
        if behaviour.rpm is None and behaviour.tpm is None:
            return False
        if name not in self._own_limits:
            self._own_limits[name] = (
                TokenBucket(behaviour.rpm, now) if behaviour.rpm else None,
                TokenBucket(behaviour.tpm, now) if behaviour.tpm else None,
            )
        requests, tokens = self._own_limits[name]
        # As the router counts: the prompt estimate plus the most the request may output.
        need = request.estimated_input_tokens() + (request.max_tokens or 0)
        # A hair of slack: the router's bucket and this one refill from different instants.
        if (requests is not None and requests.available(now) < 1 - 1e-6) or (
            tokens is not None and tokens.available(now) < need - 1e-6
        ):
            self.over_limit += 1
            return True
        if requests is not None:
            requests.take(1, now)
        if tokens is not None:
            tokens.take(need, now)
        return False

    def _relay(self, task: _Task, decision: Decision) -> None:
        """Let an opened stream run to its end, or break after its first chunk."""
        name = decision.route.provider
        behaviour = self.scenario.behaviours.get(name, SimBehaviour())
        if behaviour.phases:  # the phase's output size; no error is drawn for a relay
            behaviour = behaviour_at(behaviour, self.clock.monotonic(), 1.0)
        rng = self._provider_rng
        broken = behaviour.stream_break_rate > 0 and rng.random() < behaviour.stream_break_rate
        request = task.query.request
        response = _response(decision, request, behaviour)
        usage = response.usage

        def done() -> None:
            decision.budget.release()
            self._released()
            if broken:
                self.streams_broken += 1
                error = ProviderUnavailable("stream broke", provider=name)
                self._step(task, StreamEnd(error=error), None)
            else:
                self._step(
                    task, StreamEnd(response=response, usage=usage, cost=response.cost), None
                )

        # A stream breaks half-way through what was left of it.
        rest_s = task.stream_ends_s / 2 if broken else task.stream_ends_s
        self.at(self.clock.monotonic() + rest_s, done)


def _response(decision: Decision, request: Request, behaviour: SimBehaviour) -> Response:
    """Return a simulated provider's whole answer to ``request``."""
    usage = Usage(
        input_tokens=request.estimated_input_tokens(),
        output_tokens=min(behaviour.output_tokens, request.max_tokens or 1 << 30),
    )
    return Response(
        content="",
        provider=decision.route.provider,
        model=decision.model.name,
        request_id=request.request_id,
        usage=usage,
        cost=decision.model.cost(usage),
        finish_reason="stop",
    )


def _error_for(status: int, provider: str, *, retry_after: float | None) -> ProviderError:
    if status == 0:
        return ProviderConnectError("connection refused", provider=provider)
    if status == 429:
        return RateLimited("rate limited", provider=provider, status=429, retry_after_s=retry_after)
    if status in (401, 403):
        return AuthenticationError("unauthorized", provider=provider, status=status)
    if 400 <= status < 500 and status not in (408, 409):
        return BadRequest("bad request", provider=provider, status=status)
    # Like the wire: a 5xx may say when to come back (a 503's speaks for the whole provider).
    return ProviderUnavailable(
        f"status {status}", provider=provider, status=status, retry_after_s=retry_after
    )


def simulate(
    scenario: Scenario, *, seed: int = 0, db: str | os.PathLike[str] | None = None
) -> SimResult:
    """Run ``scenario`` and return its result; with ``db`` the event log is kept there."""
    # A path is a SQLite file; a postgresql:// URL opens PostgresStore.
    store: EventStore = open_store(db) if db is not None else MemoryStore()
    try:
        return Simulation(scenario, seed=seed, store=store).run()
    finally:
        store.close()


def _simulated_keys(config: RuntimeConfig) -> dict[str, list[str]]:
    """Return the key fingerprints of each provider with several API keys, as the runtime's.

    A simulation needs no real key: a key named by an unset variable stands in as a
    placeholder, so the ring has as many keys as the configuration names.
    """
    keys: dict[str, list[str]] = {}
    for p in config.providers:
        if not (p.api_keys or p.api_key_envs):
            continue
        ring: list[Secret] = []  # in the runtime's order (ProviderConfig.resolve_api_keys)
        if p.api_key is not None:
            ring.append(p.api_key)
        elif p.api_key_env:
            ring.append(Secret(f"simulated:{p.api_key_env}"))
        ring += p.api_keys or []
        ring += [Secret(f"simulated:{n}") for n in p.api_key_envs or []]
        keys[p.name] = [fingerprint(k) for k in dict.fromkeys(ring)]
    return keys
