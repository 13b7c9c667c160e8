"""The router: where each attempt of a request goes, and the operator's changes to routing.

:class:`Router` holds the routing state (priorities, rotations, pools, A/B tests, and a
:class:`~routeledger.actors._circuit.CircuitMirror` per provider) and decides in fixed steps:
scope (what constrains the request), preferences, a snapshot of every provider, the filters,
the strategy's ranking, and the reservation of a slot. Each decision, made or not, is one
``route.decided`` event; outcomes become events through :mod:`~routeledger.actors._recording`.
The :class:`~routeledger.actors.SupervisorActor` runs it on its own thread; the simulation runs
it directly on virtual time. Either way it is only ever called from one thread at a time.

This module is over 500 lines on purpose: it is the one owner of routing state, so every step
of a decision and every change to that state (operator changes, circuit transitions) is in
this one class, where a reader can see each mutation. What does not mutate it lives apart:
recording (``_recording``), circuits (``_circuit``), strategies (``_strategies``), the restart
plan (``_resume``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from routeledger.actors import _recording
from routeledger.actors._abtests import ABTests
from routeledger.actors._buckets import RateLimits
from routeledger.actors._budgets import BudgetGuard
from routeledger.actors._circuit import CircuitMirror, Transition, counts_against_health
from routeledger.actors._failover import RetryBudget, RetryBudgetExhausted
from routeledger.actors._keys import KeyRing
from routeledger.actors._messages import (
    Backoff,
    Decision,
    Outcome,
    ProviderStats,
    RequestEnded,
    RouteQuery,
)
from routeledger.actors._ratelimit import RateLimitMarks
from routeledger.actors._resume import Resume
from routeledger.actors._sticky import session_provider
from routeledger.actors._strategies import (
    Candidate,
    Ranking,
    View,
    confidence,
    filter_candidates,
    rank,
)
from routeledger.events import (
    ABTestConfig,
    AllProvidersUnhealthy,
    AttemptStarted,
    BudgetExceeded,
    ConcurrencyLimitChanged,
    ConfigError,
    CostEstimate,
    Event,
    NoCapableProvider,
    PoolConfig,
    PoolCreated,
    PriorityChanged,
    PromptTooLong,
    ProviderDisabled,
    ProviderFailed,
    ProviderRestarted,
    RateLimited,
    RequestError,
    Requirements,
    RouteDecided,
    RouteResult,
    RoutingError,
    RuntimeConfig,
    Usage,
    check_pool,
)
from routeledger.events._types import CAPABILITIES

if TYPE_CHECKING:
    from routeledger.actors._budget import Budget
    from routeledger.actors._clock import Clock
    from routeledger.events import (
        BudgetState,
        BudgetStatus,
        ModelSpec,
        ProviderConfig,
        ProviderRateLimited,
        Request,
    )

__all__ = ["Router"]


class _Scope(NamedTuple):
    """What constrains one request's routing, resolved once per decision."""

    model: str
    required: frozenset[str]
    max_cost: float | None
    max_latency_ms: float | None
    pool: PoolConfig | None
    pool_name: str | None
    strategy: str
    exclude: list[str]
    needed_tokens: int = 0
    """The estimated prompt plus the output asked for: what a context window must hold."""
    input_tokens: int = 0
    """The estimated prompt (estimated once per decision: it reads every message)."""


class _Candidates(NamedTuple):
    """The providers left for one model after the filters and the budgets, or the error."""

    kept: list[str]
    dropped: dict[str, str]
    panic: bool
    error: RoutingError | None
    near: dict[str, str]
    """Kept providers a budget nearing its limit covers, and that budget's name."""


class _ProviderViews(NamedTuple):
    """What the filters and the strategy read of every provider, gathered once."""

    views: list[View]
    specs: dict[str, ModelSpec]
    costs: dict[str, float | None]
    latencies: dict[str, float | None]


def _preferred_order(
    ranking: Ranking, preferred: list[str], tried: Mapping[str, int]
) -> tuple[list[str], str]:
    """Put preferences first (in the order given), then untried providers before retries;
    return the order and the reason its first provider is first."""
    order = list(ranking.order)
    reason = ranking.reason
    front = [n for n in dict.fromkeys(preferred) if n in order]
    if front:
        order = front + [n for n in order if n not in front]
        reason = f"preferred provider {front[0]!r}; strategy would say: {ranking.reason}"
    if tried:
        order = sorted(order, key=lambda n: tried.get(n, 0))
        if order[0] != ranking.order[0] and not front:
            reason = f"failover to {order[0]!r}; {ranking.reason}"
    return order, reason


def _within_budget_first(ranking: Ranking, near: Mapping[str, str]) -> Ranking:
    """Rank the providers a budget nearing its limit covers after the others (stable)."""
    ahead = [n for n in ranking.order if n not in near]
    if not ahead or len(ahead) == len(ranking.order):
        return ranking
    order = ahead + [n for n in ranking.order if n in near]
    reason = ranking.reason
    if order[0] != ranking.order[0]:
        first = ranking.order[0]
        reason = f"{first!r} is near budget {near[first]!r}, {order[0]!r} within; {reason}"
    return ranking._replace(order=order, reason=reason)


def _normal_pool(pool: PoolConfig) -> PoolConfig:
    """Return ``pool`` as recorded (weights as a plain dict or ``None``), for comparison."""
    return PoolConfig(
        name=pool.name,
        providers=list(pool.providers),
        strategy=pool.strategy,
        weights=dict(pool.weights) if pool.weights else None,
    )


class _Provider:
    """The router's record of one provider."""

    __slots__ = ("budget", "circuit", "config", "disabled_reason", "order", "priority", "stats")

    def __init__(
        self,
        config: ProviderConfig,
        order: int,
        budget: Budget,
        stats: Callable[[], ProviderStats],
    ) -> None:
        self.config = config
        self.order = order
        self.budget = budget
        self.stats = stats
        self.priority = config.priority
        self.circuit = CircuitMirror()
        self.disabled_reason: str | None = None if config.enabled else "disabled by configuration"


class Router:
    """Routing state and decisions for one runtime."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        budgets: Mapping[str, Budget],
        stats: Mapping[str, Callable[[], ProviderStats]],
        clock: Clock,
        rng: random.Random,
        emit: Callable[[list[Event]], None],
        ready: Mapping[str, Callable[[], bool]] | None = None,
        resume: Resume | None = None,
        keys: Mapping[str, list[str]] | None = None,
        spend: BudgetState | None = None,
    ) -> None:
        resume = resume or Resume()
        self.config = config
        self.clock = clock
        self.rng = rng
        self.emit = emit
        self.routing_version = resume.routing_version
        """Counts the changes to routing (circuits, priorities, limits, pools, tests)."""
        self.providers: dict[str, _Provider] = {
            p.name: _Provider(p, i, budgets[p.name], stats[p.name])
            for i, p in enumerate(config.providers)
        }
        self._ready = ready or {}
        self.pools: dict[str, PoolConfig] = {}
        self._turns: dict[tuple[str | None, str], int] = {}
        self._swrr: dict[object, dict[str, float]] = {}
        failover = config.failover
        self.retry_budgets = {
            p.name: RetryBudget(
                failover.retry_budget_ratio,
                failover.retry_budget_min,
                failover.retry_budget_window_s,
            )
            for p in config.providers
        }
        """Each provider's :class:`RetryBudget`: a retry *to* a provider spends its own."""
        self.rate_limits = RateLimits(config.providers, clock.monotonic())
        """The rpm/tpm buckets (consulted only when some limit is configured)."""
        self._limited = self.rate_limits.active
        self._headroom: dict[str, float] = {}
        self.keys = {n: KeyRing(f) for n, f in (keys or {}).items() if len(f) > 1}
        """The :class:`KeyRing` of each provider with several API keys (by fingerprint)."""
        self._limited = self._limited or bool(self.keys)
        self.marks = RateLimitMarks()
        """Which providers asked to be left alone until when (``provider.rate_limited``)."""
        self._include_text = config.log.include_text
        self.spend = BudgetGuard(config.budgets, spend)
        """Spend budgets: the spend fold over what this router records, plus reservations."""
        self.ab = ABTests(providers=lambda: set(self.providers), clock=clock, rng=rng, emit=emit)
        self._resume(resume)
        # Defined by the configuration: already there (identical) when the log says so.
        for pool in config.pools:
            if pool.name not in self.pools:
                self.create_pool(pool)
        for test in config.ab_tests:
            if test.name not in self.ab.tests:
                self.setup_ab_test(test)

    def _resume(self, resume: Resume) -> None:
        """Continue from the log's routing state: nothing is recorded, it was already."""
        for name, priority in resume.priorities.items():
            if name in self.providers:
                self.providers[name].priority = priority
        for name, limit in resume.limits.items():
            if name in self.providers:
                self.providers[name].budget.set_limit(limit)
        half_open_probes = self.config.health.half_open_probes
        for name, resumed in resume.circuits.items():
            if name in self.providers:
                self.providers[name].circuit.resume(resumed, half_open_probes=half_open_probes)
        for pool in resume.pools.values():
            if not check_pool(pool, set(self.providers), taken=set(self.pools)):
                self.pools[pool.name] = pool
        for test in resume.ab_tests.values():
            self.ab.resume(test)
        self._turns.update(resume.turns)
        for event in resume.rate_limited.values():
            if event.provider in self.providers:
                self.marks.apply(event)

    # -- helpers ----------------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.time()

    def _bump(self) -> None:
        """Count a change to routing (``route.decided`` events carry the count)."""
        self.routing_version += 1

    def provider(self, name: str) -> _Provider:
        """Return a provider's record; an unknown name is a ``RequestError``."""
        try:
            return self.providers[name]
        except KeyError:
            raise RequestError(f"unknown provider {name!r}") from None

    def estimate_cost(
        self, request: Request, model: ModelSpec, input_tokens: int | None = None
    ) -> float | None:
        """Estimate a request's cost on ``model``: prompt tokens plus the most it may output.

        The one price function, :meth:`ModelSpec.cost`, prices it; no cache hit is assumed
        (a prompt is cached only once a provider says so), so the estimate is an upper bound.
        """
        out = request.max_tokens or model.max_output or self.config.cost.assumed_output_tokens
        if not model.priced:
            return None
        if input_tokens is None:
            input_tokens = request.estimated_input_tokens()
        return model.cost(Usage(input_tokens=input_tokens, output_tokens=out))

    def estimate_costs(self, request: Request) -> dict[str, CostEstimate]:
        """Return the estimated cost of ``request`` on every provider serving its model."""
        result = {}
        out_default = self.config.cost.assumed_output_tokens
        for name, p in self.providers.items():
            model = p.config.model(request.model)
            if model is None:
                continue
            result[name] = CostEstimate(
                provider=name,
                model=model.name,
                input_tokens=request.estimated_input_tokens(),
                output_tokens=request.max_tokens or model.max_output or out_default,
                cost=self.estimate_cost(request, model),
            )
        return result

    def find_capable(self, model: str) -> list[str]:
        """Return the enabled providers serving ``model``, in configuration order."""
        return [
            n
            for n, p in self.providers.items()
            if p.disabled_reason is None and p.config.model(model) is not None
        ]

    # -- deciding ---------------------------------------------------------------------------

    def received(self, query: RouteQuery) -> None:
        """Record that a request arrived (called once, before its first decision)."""
        events: list[Event] = [
            _recording.request_received(query, ts=self._now(), include_text=self._include_text)
        ]
        if self.spend.active:
            self.spend.observe(events)
            events.extend(self._budget_announcements())
        self.emit(events)

    def _budget_announcements(self) -> list[Event]:
        """Return (and fold) the ``budget.exceeded`` / ``budget.reset`` events now due."""
        events = self.spend.announcements(self._now())
        self.spend.observe(events)
        return events

    def budget_status(self) -> list[BudgetStatus]:
        """Return every spend budget's figures now (spend recorded; reservations apart)."""
        return self.spend.status(self._now())

    def rejected(self, request_id: str, error: Exception) -> None:
        """Record that a request was refused before any provider was tried."""
        events: list[Event] = [_recording.request_rejected(request_id, error, ts=self._now())]
        self.spend.observe(events)
        self.emit(events)

    def decide(
        self,
        query: RouteQuery,
        *,
        attempt: int,
        tried: Mapping[str, int],
        banned: frozenset[str] = frozenset(),
        reserve: bool = True,
        any_model: bool = False,
        not_before: Mapping[str, float] | None = None,
        again: bool = False,
        rekey: str | None = None,
        context_over: int | None = None,
    ) -> Decision | Backoff | None:
        """Choose and reserve a provider for attempt number ``attempt`` of a request.

        Returns ``None`` when every candidate is saturated (the caller may wait for capacity
        and ask again). With ``reserve=False`` only the decision is made and recorded; with
        ``any_model`` the request's model does not filter providers (pool picks). A provider
        whose ``not_before`` (monotonic) time is still ahead is waiting out a backoff: when
        every candidate is, the answer is a :class:`Backoff` to sleep before asking again.
        Raises a :class:`RoutingError` when nothing can serve the request, and records every
        decision, made or not, as a ``route.decided`` event, except one: a request asking
        ``again`` after waiting for capacity that finds every candidate still saturated (each
        release of a slot gives every waiter a turn: the log would grow with the queue
        squared). Candidates at their rpm/tpm limit, or with every API key resting, are
        skipped; when none is left the answer is a ``Backoff`` with ``rate_limited`` set.
        A ``rekey`` provider (its last key was refused or rate-limited) comes first, with
        its next key. A model whose context window cannot hold the request is left out, and
        after a provider refused the prompt as too long for a window of ``context_over``
        tokens only a known, larger window is a candidate; when the window is all that rules
        out every provider serving the model, the answer is :class:`PromptTooLong`.
        """
        request = query.request
        scope = self._scope(query)
        now = self.clock.monotonic()
        preferred = self._preferences(query)
        snap = self._snapshot(request, scope.model, any_model, now, scope.input_tokens)

        fallback_from: str | None = None

        def decided(
            dropped: dict[str, str], *, reason: str = "", scores: dict[str, float] | None = None
        ) -> None:
            if not reason:
                reason = "every candidate saturated" if scores else "no candidate left"
            self.emit(
                [
                    self._route_decided(
                        query,
                        attempt,
                        strategy=scope.strategy,
                        pool=scope.pool_name,
                        excluded=dict(dropped),
                        scores=scores or {},
                        reason=reason,
                        fallback_from=fallback_from,
                    )
                ]
            )

        found = self._candidates(query, scope, snap, banned, context_over)
        if found.error is not None and self.config.fallbacks and not any_model:
            fallback = self._fallback(query, scope, banned, now, found, context_over)
            if fallback is not None:
                fallback_from = scope.model
                scope, snap, found = fallback
        kept, dropped, panic, error, near = found
        if error is not None:
            refused = isinstance(error, BudgetExceeded)
            decided(dropped, reason=f"refused: {error.message}" if refused else "")
            raise error
        if attempt > 1:
            # Before the backoff check: waiting out a backoff for a provider that may not be
            # retried would only delay the refusal.
            kept = self._within_retry_budget(kept, dropped, now)
            if not kept:
                decided(dropped, reason="retry budget exhausted")
                raise RetryBudgetExhausted(request.request_id)
        kept, marked = self._not_rate_limited(kept, dropped, reserve=reserve)
        if not kept and not marked:
            decided(dropped)
            raise NoCapableProvider(
                f"no provider can take model {scope.model!r} now",
                excluded=dropped,
                request_id=request.request_id,
            )
        waiting = {n: t - now for n in kept if (t := (not_before or {}).get(n, 0.0)) > now}
        if waiting:
            for name, wait in waiting.items():
                dropped[name] = f"backing off {wait:.3g} s after a failure"
            kept = [n for n in kept if n not in waiting]
        # A provider that asked to be left alone is waited for like one backing off.
        waiting.update(marked)
        if not kept and waiting:
            first = min(waiting, key=lambda n: (waiting[n], n))
            why = "rate limited" if first in marked else "backing off"
            decided(
                dropped,
                reason=f"every candidate is {why}; retry {first!r} in {waiting[first]:.3g} s",
            )
            return Backoff(waiting[first], first)
        if self._limited:
            kept, limited = self._within_rate_limits(request, kept, dropped, snap, now)
            if not kept:
                waits = {**limited, **waiting}
                first = min(waits, key=lambda n: (waits[n], n))
                decided(
                    dropped,
                    reason=f"every candidate is at its rate limit; {first!r} has headroom in "
                    f"{waits[first]:.3g} s",
                )
                return Backoff(waits[first], first, rate_limited=first in limited)

        rot_key = (scope.pool_name, scope.strategy)
        ranking, new_current = rank(
            scope.strategy,
            [self._candidate(name, snap) for name in kept],
            rng=self.rng,
            turn=self._turns.get(rot_key, 0),
            current=self._swrr.get(rot_key, {}),
            weights=scope.pool.weights if scope.pool is not None else None,
        )
        if near:
            ranking = _within_budget_first(ranking, near)
        order, reason = _preferred_order(ranking, preferred, tried)
        sticky = False
        session = request.session_id
        if session is not None and not any(n in order for n in preferred):
            home = session_provider(session, self._top_tier(kept))
            if home is not None and not tried.get(home, 0):
                order = [home, *(n for n in order if n != home)]
                reason = f"sticky session {session!r} (rendezvous over {len(kept)}); {reason}"
                sticky = True
        if rekey is not None and rekey in order:
            order = [rekey, *(n for n in order if n != rekey)]
            reason = f"next API key of {rekey!r}; {ranking.reason}"
            sticky = False
        if fallback_from is not None:
            reason = f"model {fallback_from!r} exhausted, fallback to {scope.model!r}; {reason}"
        if panic:
            reason = f"panic routing (every candidate unhealthy); {reason}"
        chosen, probe = self._reserve(order, dropped, now) if reserve else (order[0], False)
        if chosen is None:
            if not again:
                decided(dropped, scores=ranking.scores)
            return None

        key, spare_keys, key_name, charged = 0, 0, None, 0
        if self._limited and reserve:
            model = snap.specs[chosen]
            if self.rate_limits.limited(chosen):
                charged = self._tokens(request, model)
                self.rate_limits.take(chosen, model, charged, now)
            ring = self.keys.get(chosen)
            if ring is not None:
                key = ring.pick(now)
                spare_keys = ring.usable(now) - 1
                key_name = ring.fingerprints[key]
        if attempt > 1 and reserve:
            # Spent only once a slot is held: a retry that waits for capacity and asks again
            # must not pay once per wake-up.
            self.retry_budgets[chosen].spend((request.request_id, attempt), now)
        if new_current is not None:
            self._swrr[rot_key] = new_current
        self._turns[rot_key] = self._turns.get(rot_key, 0) + 1
        alternatives = [n for n in order if n != chosen and n not in dropped]
        spec = snap.specs[chosen]
        route = RouteResult(
            provider=chosen,
            model=spec.name,
            reason=reason if chosen == order[0] else f"{reason}; first choices saturated",
            confidence=confidence(ranking._replace(order=[chosen, *alternatives])),
            alternatives=alternatives,
            scores=ranking.scores,
            excluded=dropped,
            strategy=scope.strategy,
            request_id=request.request_id,
        )
        budget = self.providers[chosen].budget
        events: list[Event] = [
            self._route_decided(
                query,
                attempt,
                strategy=route.strategy,
                pool=scope.pool_name,
                excluded=route.excluded,
                scores=route.scores,
                reason=route.reason,
                chosen=route.provider,
                model=route.model,
                confidence=route.confidence,
                alternatives=route.alternatives,
                sticky=sticky and chosen == order[0],
                fallback_from=fallback_from,
            )
        ]
        if reserve:
            self.spend.hold(request, attempt, chosen, spec.name, snap.costs[chosen])
            events.append(
                AttemptStarted(
                    ts=self._now(),
                    request_id=request.request_id,
                    attempt=attempt,
                    provider=chosen,
                    model=spec.name,
                    in_flight=budget.in_flight,
                    key=key_name,
                    tokens=charged,
                )
            )
        self.emit(events)
        return Decision(
            route=route,
            model=spec,
            budget=budget,
            attempt=attempt,
            probe=probe,
            key=key,
            spare_keys=spare_keys,
        )

    def _not_rate_limited(
        self, kept: list[str], dropped: dict[str, str], *, reserve: bool
    ) -> tuple[list[str], dict[str, float]]:
        """Leave out the providers still rate-limited (see :mod:`~routeledger.actors._ratelimit`).

        Returns the rest, and the seconds left for each provider a request may wait for: one
        whose wait is within ``failover.max_retry_after_s``, when a slot is to be reserved
        (a decision only, ``reserve=False``, never waits).
        """
        now = self._now()
        if self.marks.latest <= now:
            return kept, {}
        cap = self.config.failover.max_retry_after_s
        rest: list[str] = []
        limited: dict[str, float] = {}
        for name in kept:
            wait = self.marks.wait(name, now)
            if wait <= 0:
                rest.append(name)
                continue
            if wait <= cap:
                if reserve:
                    limited[name] = wait
                dropped[name] = f"rate limited for {wait:.3g} s more (provider-wide)"
            else:
                dropped[name] = f"rate limited for {wait:.3g} s more, over max_retry_after_s"
        return rest, limited

    def _top_tier(self, names: list[str]) -> list[str]:
        """Return the providers of ``names`` with the highest priority (a session's choices:
        stickiness never sends a session to a backup tier while the top tier can serve)."""
        top = max(self.providers[n].priority for n in names)
        return [n for n in names if self.providers[n].priority == top]

    def _candidates(
        self,
        query: RouteQuery,
        scope: _Scope,
        snap: _ProviderViews,
        banned: frozenset[str],
        over: int | None,
    ) -> _Candidates:
        """Filter the snapshot, then apply the spend budgets; say why nothing is left."""
        request = query.request
        kept, dropped = self._filter(scope, snap, banned, allow_open=False, over=over)
        panic = False
        if not kept:
            # Filters run in a fixed order, so a provider dropped for its circuit could
            # otherwise have served the request.
            unhealthy = [n for n, why in dropped.items() if why.startswith("circuit")]
            if unhealthy and self.config.health.panic_routing:
                kept, dropped = self._filter(scope, snap, banned, allow_open=True, over=over)
                panic = True
            elif unhealthy:
                error: RoutingError = AllProvidersUnhealthy(
                    {n: self.providers[n].circuit.state for n in unhealthy},
                    request_id=request.request_id,
                )
                return _Candidates([], dropped, False, error, {})
        if not kept:
            windows = [why for why in dropped.values() if why.startswith("context window")]
            if windows and all(
                why.startswith("context window") or why == "model not served"
                for why in dropped.values()
            ):
                error = PromptTooLong(
                    f"no configured model {scope.model!r} has a context window that can hold "
                    f"the request (~{scope.needed_tokens} tokens)",
                    excluded=dropped,
                    request_id=request.request_id,
                )
            else:
                error = NoCapableProvider(
                    f"no provider can serve model {scope.model!r}",
                    excluded=dropped,
                    request_id=request.request_id,
                )
            return _Candidates([], dropped, False, error, {})
        if not self.spend.active:
            return _Candidates(kept, dropped, panic, None, {})
        verdict = self.spend.check(request, kept, snap.specs, self._now())
        if verdict.refused:
            error = BudgetExceeded(
                "spend " + "; ".join(verdict.refused.values()),
                budgets=list(verdict.refused),
                request_id=request.request_id,
            )
            return _Candidates([], dropped, panic, error, {})
        if verdict.dropped:
            dropped.update(verdict.dropped)
            kept = [n for n in kept if n not in verdict.dropped]
            if not kept:
                budgets = sorted({why.split("'")[1] for why in verdict.dropped.values()})
                error = BudgetExceeded(
                    f"every candidate for model {scope.model!r} is over a spend budget",
                    budgets=budgets,
                    request_id=request.request_id,
                )
                return _Candidates([], dropped, panic, error, {})
        return _Candidates(kept, dropped, panic, None, verdict.near)

    def _fallback(
        self,
        query: RouteQuery,
        scope: _Scope,
        banned: frozenset[str],
        now: float,
        exhausted: _Candidates,
        over: int | None,
    ) -> tuple[_Scope, _ProviderViews, _Candidates] | None:
        """Return the first configured fallback model some provider can serve, with its
        candidates; the reasons the requested model's providers were dropped go with it.

        The filters leave out a fallback without the request's capabilities or with a
        context window too small for it, like any model."""
        request = query.request
        for model in self.config.fallbacks.get(scope.model, ()):
            fb_scope = scope._replace(model=model)
            snap = self._snapshot(request, model, False, now, scope.input_tokens)
            found = self._candidates(query, fb_scope, snap, banned, over)
            if found.error is not None:
                continue
            kept = found.kept
            dropped = {
                n: f"{why} (model {scope.model!r})"
                for n, why in exhausted.dropped.items()
                if n not in kept
            }
            for name, why in found.dropped.items():
                if name not in kept:  # why the requested model's providers failed wins
                    dropped.setdefault(name, why)
            return fb_scope, snap, found._replace(dropped=dropped)
        return None

    def _within_retry_budget(
        self, kept: list[str], dropped: dict[str, str], now: float
    ) -> list[str]:
        """Keep the candidates whose own retry budget allows one more retry."""
        within = []
        for name in kept:
            budget = self.retry_budgets[name]
            if budget.allows(now):
                within.append(name)
            else:
                dropped[name] = (
                    f"retry budget exhausted ({budget.spent(now)} of "
                    f"{budget.allowance(now):g} retries spent)"
                )
        return within

    def _tokens(self, request: Request, spec: ModelSpec) -> int:
        """Return the tokens a request counts against a tpm limit on ``spec``: its prompt
        estimate plus the most it may output (as providers count it)."""
        out = request.max_tokens or spec.max_output or self.config.cost.assumed_output_tokens
        return request.estimated_input_tokens() + out

    def _within_rate_limits(
        self,
        request: Request,
        kept: list[str],
        dropped: dict[str, str],
        snap: _ProviderViews,
        now: float,
    ) -> tuple[list[str], dict[str, float]]:
        """Keep the candidates with rpm/tpm headroom for the request; return the others'
        waits until they have it."""
        within: list[str] = []
        limited: dict[str, float] = {}
        headroom = self._headroom
        headroom.clear()
        for name in kept:
            spec = snap.specs[name]
            room = self.rate_limits.headroom(name, spec, self._tokens(request, spec), now)
            if room.wait_s > 0:
                limited[name] = room.wait_s
                dropped[name] = f"rate limit: {room.reason}"
                continue
            ring = self.keys.get(name)
            if ring is not None and not ring.usable(now):
                limited[name] = ring.wait_s(now)
                dropped[name] = ring.why_resting(now)
                continue
            within.append(name)
            headroom[name] = room.share
        return within, limited

    def _scope(self, query: RouteQuery) -> _Scope:
        """Resolve and check what constrains a request's routing."""
        request = query.request
        req = query.requirements or Requirements()
        unknown = set(req.require_capabilities) - CAPABILITIES
        if unknown:
            raise ConfigError(
                [f"unknown required capabilities {sorted(unknown)} (known: {sorted(CAPABILITIES)})"]
            )
        if req.max_cost is not None and not req.max_cost >= 0:
            raise RequestError(f"max_cost must be >= 0, got {req.max_cost!r}")
        if req.max_latency_ms is not None and not req.max_latency_ms > 0:
            raise RequestError(f"max_latency_ms must be > 0, got {req.max_latency_ms!r}")
        pool_name = query.pool or req.pool
        input_tokens = request.estimated_input_tokens()
        pool = None
        if pool_name is not None:
            pool = self.pools.get(pool_name)
            if pool is None:
                raise RequestError(f"unknown pool {pool_name!r}", request_id=request.request_id)
        return _Scope(
            model=req.model or request.model,
            required=request.needed_capabilities() | req.require_capabilities,
            max_cost=req.max_cost
            if req.max_cost is not None
            else self.config.cost.max_cost_per_request,
            max_latency_ms=req.max_latency_ms,
            pool=pool,
            pool_name=pool_name,
            strategy=pool.strategy if pool is not None else self.config.strategy,
            exclude=list(req.exclude_providers),
            needed_tokens=input_tokens + (request.max_tokens or 0),
            input_tokens=input_tokens,
        )

    def _preferences(self, query: RouteQuery) -> list[str]:
        """Return the providers to try first, in order: A/B variant, preferred, requirements."""
        preferred: list[str] = []
        request = query.request
        if query.ab_test is not None:
            preferred.append(self.ab.provider_for(query.ab_test, request))
        if query.preferred_provider is not None:
            self.provider(query.preferred_provider)  # an unknown name is the caller's error
            preferred.append(query.preferred_provider)
        if query.requirements is not None:
            preferred.extend(query.requirements.preferred_providers)
        return preferred

    def _snapshot(
        self, request: Request, model: str, any_model: bool, now: float, input_tokens: int
    ) -> _ProviderViews:
        """Gather what filtering and ranking read of every provider, once per decision."""
        snap = _ProviderViews([], {}, {}, {})
        for name, p in self.providers.items():
            spec = p.config.model(model)
            if spec is None and any_model:
                spec = p.config.models[0]
            if spec is not None:
                snap.specs[name] = spec
            down = p.disabled_reason
            if down is None and name in self._ready and not self._ready[name]():
                down = "not running (restarting)"
            cost = snap.costs[name] = (
                self.estimate_cost(request, spec, input_tokens) if spec is not None else None
            )
            latency = snap.latencies[name] = p.stats().latency_ms
            snap.views.append(
                View(
                    name=name,
                    down=down,
                    serves_model=spec is not None,
                    capabilities=spec.capabilities if spec is not None else frozenset(),
                    circuit=p.circuit.view(now),
                    latency_ms=latency,
                    cost=cost,
                    context_window=spec.context_window if spec is not None else None,
                )
            )
        return snap

    def _filter(
        self,
        scope: _Scope,
        snap: _ProviderViews,
        banned: frozenset[str],
        *,
        allow_open: bool,
        over: int | None = None,
    ) -> tuple[list[str], dict[str, str]]:
        """Run the filters over the snapshot."""
        return filter_candidates(
            snap.views,
            required=scope.required,
            members=frozenset(scope.pool.providers) if scope.pool is not None else None,
            exclude=scope.exclude,
            failed=banned,
            max_cost=scope.max_cost,
            max_latency_ms=scope.max_latency_ms,
            allow_open=allow_open,
            needed_tokens=scope.needed_tokens,
            context_over=over,
        )

    def _candidate(self, name: str, snap: _ProviderViews) -> Candidate:
        p = self.providers[name]
        return Candidate(
            name=name,
            order=p.order,
            priority=p.priority,
            weight=p.config.weight,
            in_flight=p.budget.in_flight,
            limit=p.budget.cap,
            latency_ms=snap.latencies[name],
            cost=snap.costs[name],
            headroom=self._headroom.get(name, 1.0) if self._limited else 1.0,
        )

    def _reserve(
        self, order: list[str], dropped: dict[str, str], now: float
    ) -> tuple[str | None, bool]:
        """Reserve a slot on the first provider in ``order`` that has one.

        Returns the provider (``None`` if all are saturated) and whether the attempt is a
        circuit's half-open probe; saturated providers are added to ``dropped``.
        """
        for name in order:
            p = self.providers[name]
            due = p.circuit.view(now) == "due"
            if p.budget.try_acquire():
                if due:
                    p.circuit.take_probe()
                return name, due
            dropped[name] = f"saturated ({p.budget.in_flight}/{p.budget.cap} in flight)"
        return None, False

    def _route_decided(
        self,
        query: RouteQuery,
        attempt: int,
        *,
        strategy: str,
        pool: str | None,
        excluded: dict[str, str],
        scores: dict[str, float],
        reason: str,
        chosen: str | None = None,
        model: str | None = None,
        confidence: float = 0.0,
        alternatives: list[str] | None = None,
        sticky: bool = False,
        fallback_from: str | None = None,
    ) -> RouteDecided:
        """Return the ``route.decided`` event of one decision, made (``chosen``) or not."""
        return RouteDecided(
            ts=self._now(),
            request_id=query.request.request_id,
            strategy=strategy,
            candidates=list(self.providers),
            excluded=excluded,
            scores=scores,
            chosen=chosen,
            model=model,
            reason=reason,
            confidence=confidence,
            alternatives=alternatives or [],
            routing_version=self.routing_version,
            attempt=attempt,
            pool=pool,
            sticky=sticky,
            fallback_from=fallback_from,
        )

    # -- outcomes ---------------------------------------------------------------------------

    def finished(
        self, outcome: Outcome | None, ended: RequestEnded | None, query: RouteQuery
    ) -> None:
        """Record an attempt's outcome and, with ``ended``, the request's end."""
        events: list[Event] = []
        ts = self._now()
        if outcome is not None:
            self._settle_retry(outcome)
            if self._limited and outcome.usage is not None:
                self._settle_tokens(outcome, query)
            if outcome.error is not None and outcome.provider in self.keys:
                self.keys[outcome.provider].failed(
                    outcome.key, outcome.error, self.clock.monotonic()
                )
            if self.spend.active:
                self.spend.release(outcome.request_id, outcome.attempt)
            events.append(_recording.attempt_event(outcome, ts=ts))
            # With several keys a 429 rests only its key (the KeyRing), not the provider; a
            # 503's Retry-After speaks for the provider whichever key was used.
            key_rests = outcome.provider in self.keys and isinstance(outcome.error, RateLimited)
            marked = None if key_rests else self.marks.marked(outcome, ts)
            if marked is not None:
                self.marks.apply(marked)
                events.append(marked)
        if ended is not None:
            events.extend(
                _recording.request_ended_events(
                    query, ended, ts=ts, include_text=self._include_text
                )
            )
            if query.ab_test is not None:
                resp = ended.response
                ab_outcome = self.ab.outcome(
                    query.ab_test,
                    query.request.request_id,
                    ts=ts,
                    latency_ms=ended.latency_ms,
                    cost=resp.cost if resp is not None else None,
                    error=resp is None,
                )
                if ab_outcome is not None:  # a cache hit was not routed under the test
                    events.append(ab_outcome)
        if self.spend.active:
            if ended is not None:  # an attempt chosen but never sent has no outcome
                self.spend.release_request(query.request.request_id)
            self.spend.observe(events)
            events.extend(self._budget_announcements())
        if events:
            self.emit(events)

    def _settle_tokens(self, outcome: Outcome, query: RouteQuery) -> None:
        """Give back what the attempt's token estimate charged over what it used."""
        p = self.providers.get(outcome.provider)
        spec = p.config.model(outcome.model) if p is not None else None
        if spec is None or outcome.usage is None:
            return
        estimated = self._tokens(query.request, spec)
        used = outcome.usage.input_tokens + outcome.usage.output_tokens
        self.rate_limits.settle(outcome.provider, spec, estimated, used, self.clock.monotonic())

    def _settle_retry(self, outcome: Outcome) -> None:
        """Let an attempt's outcome earn its provider retry budget, or settle a retry's cost."""
        budget = self.retry_budgets.get(outcome.provider)
        if budget is None:
            return
        now = self.clock.monotonic()
        if outcome.error is None:
            budget.served(now)
        if outcome.attempt > 1:
            # A caller's cancellation or a full slot says nothing about the provider: only
            # what counts against its health wastes the retry.
            budget.settle(
                (outcome.request_id, outcome.attempt),
                now,
                wasted=counts_against_health(outcome.error),
            )

    # -- health -----------------------------------------------------------------------------

    def apply_health(
        self, provider: str, transition: Transition, *, record: bool = True
    ) -> list[str]:
        """Apply a circuit transition decided by the health actor; return callbacks to fire.

        ``record=False``: another runtime sharing the log recorded it; routing only follows.
        """
        p = self.providers.get(provider)
        if p is None:
            return []
        fired = []
        if transition.prior is not None:  # a step the breaker took on the way: log it first
            fired = self.apply_health(provider, transition.prior, record=record)
        p.circuit.apply(transition, half_open_probes=self.config.health.half_open_probes)
        self._bump()
        if not record:
            return fired
        events, more = _recording.transition_events(provider, transition, ts=self._now())
        self.emit(events)
        return fired + more

    def honour_rate_limit(self, event: ProviderRateLimited) -> None:
        """Fold another runtime's ``provider.rate_limited`` mark, as this runtime's own."""
        if event.provider in self.providers:
            self.marks.apply(event)
            self._bump()

    def charge_peer_attempts(self, events: list[Event]) -> None:
        """Charge other runtimes' attempts into the rpm/tpm buckets (a shared log)."""
        if self.rate_limits.active:
            self.rate_limits.charge_peers(events, self.clock.monotonic(), self._peer_estimate)

    def _peer_estimate(self, provider: str, model: str) -> int:
        """The tokens charged for another runtime's attempt that does not say: the most its
        model may output (its prompt is not recorded)."""
        p = self.providers.get(provider)
        spec = p.config.model(model) if p is not None else None
        out = spec.max_output if spec is not None else None
        return out or self.config.cost.assumed_output_tokens

    def disable(self, provider: str, reason: str) -> None:
        """Take a provider out of service for good (restart intensity exceeded)."""
        p = self.provider(provider)
        if p.disabled_reason is not None:
            return
        p.disabled_reason = reason
        self._bump()
        ts = self._now()
        self.emit(
            [
                ProviderDisabled(ts=ts, provider=provider, reason=reason),
                ProviderFailed(ts=ts, provider=provider, reason=reason),
            ]
        )

    def restarted(self, provider: str, reason: str, restarts: int) -> None:
        """Record that a crashed provider actor was restarted."""
        self.emit(
            [ProviderRestarted(ts=self._now(), provider=provider, reason=reason, restarts=restarts)]
        )

    # -- operator commands ------------------------------------------------------------------

    def set_priority(self, provider: str, priority: int) -> None:
        """Change a provider's priority at once."""
        p = self.provider(provider)
        old, p.priority = p.priority, int(priority)
        self._bump()
        self.emit([PriorityChanged(ts=self._now(), provider=provider, old=old, new=p.priority)])

    def set_limit(self, provider: str, limit: int) -> None:
        """Change a provider's concurrency budget at once."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError([f"concurrency limit for {provider!r} must be an int >= 1"])
        p = self.provider(provider)
        old = p.budget.set_limit(limit)
        self._bump()
        self.emit([ConcurrencyLimitChanged(ts=self._now(), provider=provider, old=old, new=limit)])

    def create_pool(self, pool: PoolConfig, *, replace: bool = False) -> None:
        """Add a named pool.

        The same pool again (a restarted runtime's caller repeating itself) changes nothing;
        another pool under a taken name is a ``ConfigError`` unless ``replace`` is set.
        """
        if self.pools.get(pool.name) == _normal_pool(pool):
            return
        taken = set(self.pools) - {pool.name} if replace else set(self.pools)
        problems = check_pool(pool, set(self.providers), taken=taken)
        if problems:
            raise ConfigError(problems)
        self.pools[pool.name] = _normal_pool(pool)
        self._bump()
        self.emit(
            [
                PoolCreated(
                    ts=self._now(),
                    name=pool.name,
                    providers=list(pool.providers),
                    strategy=pool.strategy,
                    weights=dict(pool.weights) if pool.weights else None,
                )
            ]
        )

    def setup_ab_test(self, test: ABTestConfig, *, replace: bool = False) -> None:
        """Add an A/B test (the same test again changes nothing; see :meth:`ABTests.setup`)."""
        if self.ab.setup(test, replace=replace):
            self._bump()

    def clear_cache(self) -> None:
        """Drop cached routes: there are none any more (``cache.route_cache`` is a no-op,
        kept so that existing configurations load); kept for the public API."""
