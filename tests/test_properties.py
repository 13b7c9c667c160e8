"""Properties of the runtime's logic, checked with Hypothesis on the deterministic simulation.

The state machine drives a :class:`~routeledger.sim.Simulation` step by step (requests with
random routing options, time passing, outages starting and ending, limits and priorities
changing) and checks, after every step, what must always hold: budgets, one final event per
request, attempts within bounds, circuits that follow their state machine and are respected,
live projections equal to a replay, spend budgets never over by more than one request's cost,
sessions that stay on their provider while it can serve them, and no secret anywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from routeledger.actors._circuit import LEGAL
from routeledger.actors._messages import RouteQuery
from routeledger.actors._sticky import session_provider
from routeledger.events import (
    ConfigError,
    Event,
    Message,
    Projections,
    Request,
    Requirements,
    RouteledgerError,
    encode_event,
    event_tag,
    period_start,
)
from routeledger.sim import Outage, Scenario, SimBehaviour, Simulation, scenario_from_dict
from routeledger.store import MemoryStore

MODEL = "m"
NAMES = ("a", "b", "c")
CANARY = "sk-canary-7f3d9b21c0e84a56"
FINAL_TAGS = ("request.completed", "request.failed")


def build_scenario(
    *,
    strategy: str = "round-robin",
    limits: tuple[int, ...] = (4, 4, 4),
    failover: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    pools: list[dict[str, Any]] | None = None,
    ab_tests: list[dict[str, Any]] | None = None,
    rpms: tuple[int | None, ...] = (None, None, None),
    budgets: list[dict[str, Any]] | None = None,
) -> Scenario:
    """Return a scenario of providers a, b, c (each with the canary key) and no workload;
    a provider with an ``rpm`` enforces it itself too (a 429 beyond it)."""
    providers = [
        {
            "name": name,
            "api_key": CANARY,
            "max_concurrency": limit,
            "models": [{"name": MODEL, "input_per_mtok": 1.0 + i, "output_per_mtok": 2.0}],
            "sim": {"latency_ms": 50.0 + 40 * i, "latency_sigma": 0.3}
            | ({"rpm": rpm} if rpm else {}),
        }
        | ({"rpm": rpm} if rpm else {})
        for i, (name, limit, rpm) in enumerate(zip(NAMES, limits, rpms, strict=True))
    ]
    return scenario_from_dict(
        {
            "simulation": {"requests": 0},
            "strategy": strategy,
            "providers": providers,
            "failover": failover or {},
            "health": health or {},
            "pools": pools or [],
            "ab_tests": ab_tests or [],
            "budgets": budgets or [],
        }
    )


def request(
    i: int,
    *,
    deadline: float | None = None,
    stream: bool = False,
    priority: int = 0,
    session: str | None = None,
) -> Request:
    """Return the ``i``-th request of a property run."""
    return Request(
        model=MODEL,
        messages=[Message(role="user", content="hello")],
        max_tokens=16,
        request_id=f"p-{i:06d}",
        deadline=deadline,
        stream=stream,
        priority=priority,
        session_id=session,
    )


def over_rpm(events: list[Event], provider: str, rpm: int) -> list[float]:
    """Return the times of the attempts on ``provider`` beyond a bucket of ``rpm`` a minute.

    Written apart from the runtime's buckets on purpose: a full bucket of ``rpm`` refilled
    at ``rpm`` per minute, one taken per attempt started, must never go below zero.
    """
    level, last, over = float(rpm), None, []
    for e in events:
        if type(e).__name__ != "AttemptStarted" or e.provider != provider:
            continue
        if last is not None:
            level = min(float(rpm), level + (e.ts - last) * rpm / 60.0)
        last = e.ts
        level -= 1
        if level < -1e-6:
            over.append(e.ts)
    return over


def log_of(sim: Simulation) -> list[Event]:
    """Return every committed event of a simulation."""
    return [event for _, event in sim.store.read()]


class LogChecker:
    """Folds a simulation's log and checks the properties of the event sequence."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.config = sim.config
        self.limits = {p.name: p.max_concurrency for p in self.config.providers}
        self.state = dict.fromkeys(self.limits, "closed")
        self.open_until: dict[str, float | None] = dict.fromkeys(self.limits)
        self.probes = Counter[str]()
        self.transitions = Counter[tuple[str, str, str]]()
        self.unhealthy = Counter[str]()
        self.recovered = Counter[str]()
        self.received: dict[str, float] = {}
        self.deadline: dict[str, float | None] = {}
        self.attempts = Counter[str]()
        self.finals = Counter[str]()
        self.streams: set[str] = set()
        self.broken: set[str] = set()
        self.position = 0

    def fold(self) -> None:
        """Check every event committed since the last fold."""
        events = [e for _, e in self.sim.store.read(self.position + 1)]
        self.position += len(events)
        max_attempts = self.config.failover.max_attempts
        half_open_probes = self.config.health.half_open_probes
        for event in events:
            tag = event_tag(event)
            e: Any = event
            if tag == "provider.concurrency_changed":
                self.limits[e.provider] = e.new
            elif tag == "request.received":
                assert e.request_id not in self.received, "a request received twice"
                self.received[e.request_id] = e.ts
                self.deadline[e.request_id] = e.deadline_s
                if e.stream:
                    self.streams.add(e.request_id)
            elif tag == "attempt.started":
                rid = e.request_id
                self.attempts[rid] += 1
                assert self.finals[rid] == 0, "an attempt after the request ended"
                assert rid not in self.broken, "a stream retried after its first chunk"
                assert self.attempts[rid] <= max_attempts
                budget = self.deadline[rid] or self.config.failover.default_deadline_s
                assert budget is None or e.ts < self.received[rid] + budget + 1e-9
                # Budgets: a slot is reserved only under the limit in force at that moment.
                assert 1 <= e.in_flight <= self.limits[e.provider]
                # Circuits: never routed to while open, except the due probes.
                state = self.state[e.provider]
                if state != "closed":
                    until = self.open_until[e.provider]
                    assert until is not None and e.ts >= self.epoch + until - 1e-9, (
                        f"attempt to {e.provider} while its circuit is {state} before cooldown"
                    )
                    self.probes[e.provider] += 1
                    assert self.probes[e.provider] <= half_open_probes, (
                        f"more than {half_open_probes} probe(s) through {e.provider}'s circuit"
                    )
            elif tag == "attempt.succeeded" and e.request_id in self.streams:
                assert e.stream and e.ttft_ms is not None, "a stream without its first-chunk time"
                assert e.ttft_ms <= e.latency_ms + 1e-9
            elif tag == "attempt.failed" and e.error == "StreamInterrupted":
                assert e.request_id in self.streams
                self.broken.add(e.request_id)
            elif tag in FINAL_TAGS:
                if e.request_id in self.broken:
                    assert tag == "request.failed" and e.error == "StreamInterrupted"
                self.finals[e.request_id] += 1
                assert self.finals[e.request_id] == 1, f"two final events for {e.request_id}"
                assert e.request_id in self.received
            elif tag == "circuit.state_changed":
                pair = (e.from_state, e.to_state)
                assert pair in LEGAL, f"illegal transition {pair}"
                assert self.state[e.provider] == e.from_state, "transition from a stale state"
                self.state[e.provider] = e.to_state
                self.transitions[(e.provider, *pair)] += 1
                if e.to_state == "open":
                    self.open_until[e.provider] = e.open_until
                    self.probes[e.provider] = 0
                elif e.to_state == "closed":
                    self.open_until[e.provider] = None
            elif tag == "provider.unhealthy":
                self.unhealthy[e.provider] += 1
            elif tag == "provider.recovered":
                self.recovered[e.provider] += 1
        for name in self.limits:
            # Exactly one provider.unhealthy per closed->open, one recovered per ->closed.
            assert self.unhealthy[name] == self.transitions[(name, "closed", "open")]
            assert self.recovered[name] == self.transitions[(name, "half_open", "closed")]
            assert self.state[name] == self.sim.health.breakers[name].state

    @property
    def epoch(self) -> float:
        """Return the wall-clock stamp of simulated monotonic time 0."""
        return self.sim.clock.time() - self.sim.clock.monotonic()

    def check_all_ended(self) -> None:
        """Check that every received request ended exactly once."""
        assert set(self.finals) == set(self.received)
        assert all(n == 1 for n in self.finals.values())


def assert_no_canary(sim: Simulation) -> None:
    """Check that no stored event encodes the canary key."""
    needle = CANARY.encode()
    for event in log_of(sim):
        assert needle not in encode_event(event)


class RuntimeMachine(RuleBasedStateMachine):
    """Random operations on a simulated runtime; invariants after every step."""

    sim: Simulation
    checker: LogChecker

    @initialize(
        strategy=st.sampled_from(
            ["round-robin", "least-loaded", "latency", "cost", "weighted", "usage"]
        ),
        rpms=st.tuples(*[st.sampled_from([None, None, 3, 10, 40])] * 3),
        limits=st.tuples(*[st.integers(1, 4)] * 3),
        max_attempts=st.integers(1, 4),
        per_provider=st.integers(1, 2),
        threshold=st.integers(1, 3),
        cooldown=st.sampled_from([0.5, 2.0, 5.0]),
        probes=st.integers(1, 2),
        seed=st.integers(0, 2**32),
        budget=st.sampled_from(["none", "refuse", "other_providers"]),
        budget_limit=st.sampled_from([2e-4, 1e-3]),
    )
    def start(
        self,
        strategy: str,
        limits: tuple[int, int, int],
        max_attempts: int,
        per_provider: int,
        threshold: int,
        cooldown: float,
        probes: int,
        seed: int,
        rpms: tuple[int | None, int | None, int | None] = (None, None, None),
        budget: str = "none",
        budget_limit: float = 1e-3,
    ) -> None:
        """Build a simulation of three providers with a pool, an A/B test and maybe a budget."""
        self.rpms = dict(zip(NAMES, rpms, strict=True))
        budgets: list[dict[str, Any]] = []
        if budget == "refuse":
            budgets = [{"name": "all", "limit": budget_limit, "prefer_below": 0.5}]
        elif budget == "other_providers":
            budgets = [{"name": "a", "limit": budget_limit, "provider": "a", "on_exceeded": budget}]
        scenario = build_scenario(
            strategy=strategy,
            limits=limits,
            rpms=rpms,
            failover={
                "max_attempts": max_attempts,
                "max_attempts_per_provider": min(per_provider, max_attempts),
                "queue_timeout_s": 1.0,
                "backoff_base_s": 0.05,
            },
            health={
                "failure_threshold": threshold,
                "cooldown_s": cooldown,
                "half_open_probes": probes,
                "min_calls": 4,
                "window_size": 8,
            },
            pools=[{"name": "pool", "providers": ["a", "c"], "strategy": "weighted"}],
            ab_tests=[{"name": "ab", "variant_a": "a", "variant_b": "b", "split_ratio": 0.3}],
            budgets=budgets,
        )
        self.sim = Simulation(scenario, seed=seed)
        self.checker = LogChecker(self.sim)
        self.count = 0
        self.over_limit: list[str] = []
        self.sim.on_step = self._after_event
        # A limit lowered below the slots in use lets those drain: until they have, the
        # ceiling is what was in flight then, and it only falls.
        self.ceiling = dict.fromkeys(NAMES, 0)
        self.max_limit = dict(zip(NAMES, limits, strict=True))

    def _after_event(self, sim: Simulation) -> None:
        for name, budget in sim.budgets.items():
            ceiling = self.ceiling[name] = min(self.ceiling[name], budget.in_flight)
            if budget.in_flight > max(budget.limit, ceiling):
                self.over_limit.append(f"{name}: {budget.in_flight}/{budget.limit}")

    @rule(
        n=st.integers(1, 6),
        routing=st.sampled_from(["plain", "preferred", "pool", "ab", "exclude", "caps"]),
        preferred=st.sampled_from(NAMES),
        deadline=st.sampled_from([None, 0.5, 3.0]),
        stream=st.booleans(),
        priority=st.sampled_from([0, 0, 1, 5]),
        session=st.sampled_from([None, "s1", "s2", "s3"]),
    )
    def submit(
        self,
        n: int,
        routing: str,
        preferred: str,
        deadline: float | None,
        stream: bool,
        priority: int = 0,
        session: str | None = None,
    ) -> None:
        """Submit ``n`` requests (completions or streams) now with one kind of routing option."""
        for _ in range(n):
            options: dict[str, Any] = {}
            if routing == "preferred":
                options["preferred_provider"] = preferred
            elif routing == "pool":
                options["pool"] = "pool"
            elif routing == "ab":
                options["ab_test"] = "ab"
            elif routing == "exclude":
                options["requirements"] = Requirements(exclude_providers=[preferred])
            elif routing == "caps":
                options["requirements"] = Requirements(max_cost=1e-9)  # nothing is that cheap
            self.sim.submit(
                request(
                    self.count,
                    deadline=deadline,
                    stream=stream,
                    priority=priority,
                    session=session,
                ),
                **options,
            )
            self.count += 1

    @rule(dt=st.sampled_from([0.01, 0.1, 0.5, 2.0, 10.0]))
    def advance(self, dt: float) -> None:
        """Let simulated time pass."""
        self.sim.run(until=self.sim.clock.monotonic() + dt)

    @rule(name=st.sampled_from(NAMES), status=st.sampled_from([503, 500, 0, 429]))
    def outage_starts(self, name: str, status: int) -> None:
        """Make a provider fail every call from now on."""
        now = self.sim.clock.monotonic()
        self.sim.set_behaviour(
            name,
            SimBehaviour(
                latency_ms=60.0,
                outages=[Outage(start_s=now, end_s=now + 1e9, status=status)],
            ),
        )

    @rule(name=st.sampled_from(NAMES), rate=st.sampled_from([0.3, 1.0]))
    def streams_break(self, name: str, rate: float) -> None:
        """Make a provider's streams break after their first chunk (some, or all)."""
        self.sim.set_behaviour(name, SimBehaviour(latency_ms=60.0, stream_break_rate=rate))

    @rule(name=st.sampled_from(NAMES), slow=st.booleans())
    def outage_ends(self, name: str, slow: bool) -> None:
        """Make a provider answer again (maybe slower than its timeout)."""
        self.sim.set_behaviour(name, SimBehaviour(latency_ms=80_000.0 if slow else 60.0))

    @rule(name=st.sampled_from(NAMES), limit=st.integers(1, 5))
    def set_limit(self, name: str, limit: int) -> None:
        """Change a provider's concurrency limit through the router."""
        budget = self.sim.budgets[name]
        if budget.in_flight > limit:
            self.ceiling[name] = budget.in_flight
        self.sim.router.set_limit(name, limit)
        self.max_limit[name] = max(self.max_limit[name], limit)

    @rule(name=st.sampled_from(NAMES), priority=st.integers(-5, 5))
    def set_priority(self, name: str, priority: int) -> None:
        """Change a provider's priority through the router."""
        self.sim.router.set_priority(name, priority)

    @rule()
    def bad_limit(self) -> None:
        """A limit below one is refused without leaking the key."""
        try:
            self.sim.router.set_limit("a", 0)
        except ConfigError as exc:
            assert CANARY not in str(exc)
        else:
            raise AssertionError("a limit of 0 was accepted")

    @precondition(lambda self: self.count > 0)
    @rule()
    def run_until_quiet(self) -> None:
        """Run until nothing is pending: every request has ended."""
        self.sim.run()
        self.checker.fold()
        self.checker.check_all_ended()
        assert self.sim.parked == 0
        assert all(b.in_flight == 0 for b in self.sim.budgets.values())

    @invariant()
    def budgets_respected(self) -> None:
        """No provider ever has more in flight than its budget (or a lowered budget drains)."""
        assert self.over_limit == []
        for name, budget in self.sim.budgets.items():
            assert budget.in_flight <= max(budget.limit, self.ceiling[name])
            assert self.sim.max_in_flight[name] <= self.max_limit[name]

    @invariant()
    def never_over_rpm(self) -> None:
        """No provider is sent more than its rpm allows, and none refuses one for its own."""
        self.sim.writer.commit(force=True)
        events = log_of(self.sim)
        for name, rpm in self.rpms.items():
            if rpm:
                assert over_rpm(events, name, rpm) == []
        assert self.sim.over_limit == 0

    @invariant()
    def log_properties_hold(self) -> None:
        """The log folds without breaking any event-sequence property."""
        self.sim.writer.commit(force=True)
        self.checker.fold()

    @invariant()
    def live_equals_replay(self) -> None:
        """Live projections equal a replay of the log."""
        self.sim.writer.commit(force=True)
        live = self.sim.writer.projections.snapshot()
        assert live == self.sim.store.replay(Projections()).snapshot()

    @invariant()
    def spend_within_one_request_of_each_budget(self) -> None:
        """No budget's period spend passes its limit by more than one attempt's cost."""
        if not self.sim.config.budgets:
            return
        self.sim.writer.commit(force=True)
        now = self.sim.clock.time()
        for budget in self.sim.config.budgets:
            start = period_start(budget.period, now)
            costs = [
                e.cost
                for e in log_of(self.sim)
                if event_tag(e) == "attempt.succeeded"
                and e.cost is not None  # type: ignore[attr-defined]
                and e.ts >= start
                and budget.covers(e.provider, e.model)  # type: ignore[attr-defined]
            ]
            assert sum(costs) <= budget.limit + max(costs, default=0.0) + 1e-12
        # The router's fold is configured directly, not from config.applied: the time of the
        # latest event it read may differ, the figures may not.
        live = self.sim.writer.projections.budgets.state()
        routed = self.sim.router.spend.fold.state()
        assert (routed.budgets, routed.tags) == (live.budgets, live.tags)

    @invariant()
    def a_session_stays_on_its_provider_while_it_can_serve(self) -> None:
        """A session's first attempt goes to its rendezvous choice unless that one is full."""
        received: dict[str, Any] = {}
        priority = {p.name: p.priority for p in self.sim.config.providers}
        for event in log_of(self.sim):
            e: Any = event
            tag = event_tag(event)
            if tag == "request.received":
                received[e.request_id] = e
                continue
            if tag == "provider.priority_changed":
                priority[e.provider] = e.new
                continue
            if tag != "route.decided" or e.chosen is None or e.attempt != 1:
                continue
            r = received[e.request_id]
            if r.session_id is None or r.preferred_provider is not None or r.ab_test is not None:
                continue
            saturated = {n for n, why in e.excluded.items() if why.startswith("saturated")}
            kept = [n for n in e.candidates if n not in e.excluded or n in saturated]
            top = max(priority[n] for n in kept)
            home = session_provider(r.session_id, [n for n in kept if priority[n] == top])
            assert e.chosen == home or home in saturated, (r.session_id, home, e)

    @invariant()
    def no_secret_in_the_log(self) -> None:
        """The canary key appears in no stored event."""
        assert isinstance(self.sim.store, MemoryStore)
        assert_no_canary(self.sim)

    def teardown(self) -> None:
        """Finish every request and check that each ended once."""
        if hasattr(self, "sim"):
            self.sim.run()
            self.checker.fold()
            self.checker.check_all_ended()


RuntimeMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRuntimeMachine = RuntimeMachine.TestCase


# -- convergence of weighted and A/B splits ---------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    weights=st.tuples(*[st.integers(1, 6)] * 3),
    seed=st.integers(0, 2**32),
)
def test_weighted_pool_split_converges_to_its_weights(
    weights: tuple[int, int, int], seed: int
) -> None:
    """A weighted pool sends each provider its weight's share of first attempts."""
    scenario = build_scenario(
        limits=(1000, 1000, 1000),
        pools=[
            {
                "name": "w",
                "providers": list(NAMES),
                "strategy": "weighted",
                "weights": dict(zip(NAMES, map(float, weights), strict=True)),
            }
        ],
    )
    sim = Simulation(scenario, seed=seed)
    n = 600
    for i in range(n):
        sim.submit(request(i), pool="w")
    sim.run()
    chosen = Counter(
        e.chosen  # type: ignore[attr-defined]  # a RouteDecided, by its tag
        for e in log_of(sim)
        if event_tag(e) == "route.decided" and e.attempt == 1  # type: ignore[attr-defined]
    )
    total = sum(weights)
    for name, w in zip(NAMES, weights, strict=True):
        expected = n * w / total
        # Smooth weighted round-robin is exact per cycle of `total` picks.
        assert abs(chosen[name] - expected) <= 1 + total, (name, chosen, weights)


@settings(max_examples=10, deadline=None)
@given(ratio=st.floats(0.1, 0.9), seed=st.integers(0, 2**32))
def test_ab_split_converges_to_its_ratio(ratio: float, seed: int) -> None:
    """An A/B test assigns variant A with probability split_ratio (5-sigma bound)."""
    scenario = build_scenario(
        limits=(1000, 1000, 1000),
        ab_tests=[{"name": "t", "variant_a": "a", "variant_b": "b", "split_ratio": ratio}],
    )
    sim = Simulation(scenario, seed=seed)
    n = 1000
    for i in range(n):
        sim.submit(request(i), ab_test="t")
    sim.run()
    events = log_of(sim)
    assigned = [e for e in events if event_tag(e) == "ab.variant_assigned"]
    assert len(assigned) == n
    a = sum(1 for e in assigned if e.variant == "A")  # type: ignore[attr-defined]  # by tag
    sigma = math.sqrt(n * ratio * (1 - ratio))
    assert abs(a - n * ratio) <= 5 * sigma
    # Each variant's requests went to its provider, and the results count them all.
    results = sim.writer.projections.ab.results("t")
    assert results["A"].requests == a
    assert results["B"].requests == n - a


def test_ab_assignment_is_made_once_per_request_even_when_it_waits_for_capacity() -> None:
    """A request that waits for capacity keeps its variant: one assignment per request."""
    scenario = build_scenario(
        limits=(1, 1, 1),
        failover={"queue_timeout_s": 30.0},
        ab_tests=[{"name": "t", "variant_a": "a", "variant_b": "b", "split_ratio": 0.5}],
    )
    sim = Simulation(scenario, seed=4)
    n = 40
    for i in range(n):
        sim.submit(request(i), ab_test="t")
    result = sim.run()
    assert result.completed == n
    assigned = Counter(
        e.request_id  # type: ignore[attr-defined]  # an ABVariantAssigned, by its tag
        for e in log_of(sim)
        if event_tag(e) == "ab.variant_assigned"
    )
    assert set(assigned.values()) == {1}
    assert len(assigned) == n


# -- reproducibility --------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), strategy=st.sampled_from(["round-robin", "latency", "cost"]))
def test_a_seed_reproduces_its_log_and_another_seed_does_not(seed: int, strategy: str) -> None:
    """Two runs with one seed encode the same log; the next seed gives another log."""

    def run(s: int) -> list[bytes]:
        scenario = build_scenario(strategy=strategy)
        scenario.requests = 150
        scenario.behaviours["b"] = SimBehaviour(fail_rate=0.2, latency_ms=70)
        sim = Simulation(scenario, seed=s)
        sim.run()
        return [encode_event(e) for e in log_of(sim)]

    first = run(seed)
    assert run(seed) == first
    assert run(seed + 1) != first


# -- secrets ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.sampled_from([0, 401, 403, 404, 429, 500, 503]),
    seed=st.integers(0, 2**16),
)
def test_the_api_key_never_reaches_the_log_or_an_error(status: int, seed: int) -> None:
    """Whatever fails, the canary key is in no event and in no error raised or recorded."""
    scenario = build_scenario()
    scenario.requests = 60
    for name in NAMES:
        scenario.behaviours[name] = SimBehaviour(fail_rate=0.5, fail_status=status or 500)
    scenario.behaviours["c"] = SimBehaviour(outages=[Outage(start_s=0.0, end_s=1e9, status=status)])
    sim = Simulation(scenario, seed=seed)
    sim.run()
    raised: list[str] = []
    query = RouteQuery(request(10_000), preferred_provider="nope")
    for attempt in (
        lambda: sim.router.decide(query, attempt=1, tried={}),
        lambda: sim.router.set_limit("a", 0),
        lambda: sim.set_behaviour("nope", SimBehaviour()),
    ):
        try:
            attempt()
        except RouteledgerError as exc:
            raised.append(repr(exc) + str(exc))
    assert len(raised) == 3
    # The errors the failed requests ended with are recorded in the log, checked below.
    assert sim.failed > 0
    assert_no_canary(sim)
    assert all(CANARY not in text for text in raised)
    assert CANARY not in repr(sim.config)


@settings(max_examples=25, deadline=None)
@given(
    field=st.sampled_from(["max_concurrency", "timeout_s", "priority", "kind", "base_url"]),
    value=st.sampled_from([-1, 0, "xxx", None, 1e309, [1]]),
)
def test_a_rejected_configuration_never_quotes_the_key(field: str, value: Any) -> None:
    """A configuration error names the problem, never the key given beside (or in) it."""
    table: dict[str, Any] = {
        "name": "a",
        "api_key": CANARY,
        "models": [{"name": MODEL}],
        field: value,
    }
    try:
        scenario_from_dict({"providers": [table]})
    except ConfigError as exc:
        assert CANARY not in str(exc)
        assert CANARY not in repr(exc)
    else:
        # Only values that are valid get here; the sampled ones are mostly not.
        assert field in ("priority", "timeout_s") or value is None
