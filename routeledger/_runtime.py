"""The :class:`Runtime` facade: start the actors, route requests through them, report figures.

A request costs the caller one ``ask`` of the supervisor per attempt (the decision, with the
slot reserved) and two ``tell``\\ s afterwards (the outcome to the supervisor and to the
provider actor). The HTTP call runs on the caller's own thread, through the provider's
adapter; async callers get a bounded pool of worker threads, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import logging
import os
import random
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec
import pykka

from routeledger._answer import StreamedAnswer
from routeledger._cache import ResponseCache, cache_key
from routeledger.actors._budget import Budget, CapacitySignal
from routeledger.actors._bus import EventBus
from routeledger.actors._clock import Clock, SystemClock
from routeledger.actors._failover import (
    AwaitCapacity,
    Call,
    Decide,
    Report,
    Sleep,
    Success,
    drive,
)
from routeledger.actors._health import SNAPSHOT, TICK, HealthActor
from routeledger.actors._messages import Decision, Outcome
from routeledger.actors._provider import (
    PING as _PING,
)
from routeledger.actors._provider import (
    AdapterFactory,
    ProbeResult,
    ProviderActor,
    ProviderHandle,
    default_adapter_factory,
)
from routeledger.actors._router import Final, RouteQuery, Router
from routeledger.actors._supervisor import (
    BufferedEmitter,
    Command,
    DecideAttempt,
    Notify,
    ReportAttempt,
    SupervisorActor,
    UseHealth,
)
from routeledger.actors._writer import EventWriter, Flush, LogWriterActor, Query
from routeledger.events import (
    ABAssignment,
    ABTestConfig,
    ABVariantResult,
    ConfigError,
    ConfigurationApplied,
    CostEstimate,
    HealthCheckResult,
    HealthProbed,
    PoolConfig,
    ProviderConfig,
    ProviderConnectError,
    ProviderError,
    ProviderHealth,
    ProviderMetrics,
    Request,
    RequestError,
    Requirements,
    Response,
    RouteResult,
    RoutingError,
    RuntimeConfig,
    StoreError,
    StreamCancelled,
    StreamChunk,
    StreamInterrupted,
    UsageReport,
    validate_config,
    validate_request,
)
from routeledger.store import EventStore, MemoryStore, SQLiteStore

if TYPE_CHECKING:
    from routeledger.actors._wire import WireAdapter

__all__ = ["Runtime"]

log = logging.getLogger("routeledger")

ASK_TIMEOUT_S = 30.0
"""How long a caller waits for an actor's answer before calling the runtime broken."""

T = TypeVar("T")

_OPEN: weakref.WeakSet[Runtime] = weakref.WeakSet()
"""Runtimes not closed yet: closed (so their logs are flushed) when the interpreter exits."""


@atexit.register
def _close_open_runtimes() -> None:
    for rt in list(_OPEN):
        try:
            rt.close()
        except Exception:
            log.exception("closing a runtime at exit failed")


class _Primed(NamedTuple):
    """A stream whose first chunk has arrived (so failover is no longer possible)."""

    first: StreamChunk
    rest: Iterator[StreamChunk]
    ttft_ms: float


def _config_summary(config: RuntimeConfig) -> dict[str, Any]:
    """Return the configuration as plain data, without any secret."""

    def hook(obj: Any) -> Any:
        return None  # Secret: dropped

    data: dict[str, Any] = msgspec.to_builtins(config, enc_hook=hook)
    for p in data.get("providers", []):
        p.pop("api_key", None)
        p.pop("headers", None)
    return data


class Runtime:
    """An embedded router: provider actors, a supervisor, a health actor and the event log.

    Start one with :meth:`start`; use it as a context manager or call :meth:`close`.
    """

    def __init__(self) -> None:
        raise TypeError("use Runtime.start(config, event_log=...)")

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        config: RuntimeConfig,
        *,
        event_log: str | os.PathLike[str] | EventStore | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        environ: Mapping[str, str] | None = None,
        adapter_factory: AdapterFactory | None = None,
        active_health_checks: bool = True,
        max_workers: int = 64,
    ) -> Runtime:
        """Validate ``config``, start every actor, and record the configuration.

        Args:
            config: The configuration.
            event_log: A SQLite file path, a store, or ``None`` for an in-memory log.
            clock: The clock (tests and simulations inject a virtual one).
            seed: Seeds the RNG of every random choice (default ``config.seed``).
            environ: Where ``api_key_env`` variables are read (default ``os.environ``).
            adapter_factory: Builds each provider's adapter and client (for tests).
            active_health_checks: Probe providers every ``health.interval_s``.
            max_workers: Threads serving the async API.

        Raises:
            ConfigError: The configuration is invalid (every problem listed).
            StoreError: The event log cannot be opened.
        """
        validate_config(config, environ=environ)
        self = object.__new__(cls)
        self._init(
            config,
            event_log=event_log,
            clock=clock or SystemClock(),
            seed=config.seed if seed is None else seed,
            environ=environ,
            adapter_factory=adapter_factory or default_adapter_factory,
            active_health_checks=active_health_checks,
            max_workers=max_workers,
        )
        return self

    def _init(
        self,
        config: RuntimeConfig,
        *,
        event_log: str | os.PathLike[str] | EventStore | None,
        clock: Clock,
        seed: int | None,
        environ: Mapping[str, str] | None,
        adapter_factory: AdapterFactory,
        active_health_checks: bool,
        max_workers: int,
    ) -> None:
        self.config = config
        self._clock = clock
        self._closed = False
        self._close_lock = threading.Lock()
        self._environ = environ
        self._adapter_factory = adapter_factory
        self.rng = random.Random(seed)
        if event_log is None:
            self._store: EventStore = MemoryStore()
        elif isinstance(event_log, str | os.PathLike):
            self._store = SQLiteStore(event_log, synchronous=config.log.synchronous)
        else:
            self._store = event_log
        self.event_log_path = (
            os.fspath(event_log) if isinstance(event_log, str | os.PathLike) else None
        )
        self.store_error: StoreError | None = None
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rl-async")
        self._cache = (
            ResponseCache(
                ttl_s=config.cache.ttl_s, max_entries=config.cache.max_entries, clock=clock
            )
            if config.cache.enabled
            else None
        )
        self._bus = EventBus()
        self._signal = CapacitySignal()
        self._waiting = 0
        self._waiting_lock = threading.Lock()

        self._writer = LogWriterActor.start(
            EventWriter(self._store, config=config.log, clock=clock, on_error=self._on_store_error)
        )
        emit = BufferedEmitter(self._writer, self._bus)
        summary = _config_summary(config)
        digest = hashlib.sha256(msgspec.json.encode(summary)).hexdigest()[:16]
        emit(
            [
                ConfigurationApplied(
                    ts=clock.time(),
                    config_version=1,
                    digest=digest,
                    providers=[p.name for p in config.providers],
                    strategy=config.strategy,
                    summary=summary,
                )
            ]
        )
        self._handles: dict[str, ProviderHandle] = {
            p.name: ProviderHandle(p, Budget(p.max_concurrency, self._signal))
            for p in config.providers
        }
        self._timeouts = {p.name: p.timeout_s for p in config.providers}
        router = Router(
            config,
            budgets={n: h.budget for n, h in self._handles.items()},
            stats={n: h.read_stats for n, h in self._handles.items()},
            clock=clock,
            rng=self.rng,
            emit=emit,
            ready={n: functools.partial(_ready, h) for n, h in self._handles.items()},
        )
        emit.send()  # the configuration, pools and A/B tests, before anything else
        self._supervisor = SupervisorActor.start(
            router=router,
            handles=self._handles,
            restart=self._start_provider,
            clock=clock,
            emit=emit,
        )
        self._health = HealthActor.start(
            config.health,
            list(self._handles),
            clock=clock,
            supervisor=self._supervisor,
            provider_refs=self._provider_refs,
            active=active_health_checks,
        )
        self._supervisor.tell(UseHealth(self._health))
        for name in self._handles:
            self._start_provider(name)
        for handle in self._handles.values():
            ref = handle.actor_ref
            if ref is None:
                continue
            try:  # wait until on_start ran (a failure there is handled by supervision)
                ref.ask(_PING, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        # Only a fully built runtime can be closed at exit: one whose start failed (a newer
        # schema, a locked file) has no actors or executor to close.
        _OPEN.add(self)

    def _start_provider(self, name: str) -> None:
        handle = self._handles[name]
        config = handle.config
        handle.actor_ref = ProviderActor.start(
            handle,
            api_key=config.resolve_api_key(self._environ),
            supervisor=self._supervisor,
            monotonic=self._clock.monotonic,
            adapter_factory=self._adapter_factory,
        )

    def _provider_refs(self) -> dict[str, pykka.ActorRef[Any]]:
        return {n: h.actor_ref for n, h in self._handles.items() if h.actor_ref is not None}

    def _on_store_error(self, error: StoreError | None) -> None:
        self.store_error = error

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush the log, stop every actor and close every connection (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            _OPEN.discard(self)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._drain_outcomes()
        for ref in (self._health, *self._provider_refs().values(), self._supervisor):
            try:
                ref.stop(block=True, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        try:
            self._writer.stop(block=True, timeout=ASK_TIMEOUT_S)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass
        self._bus.close()
        for handle in self._handles.values():
            for client in handle.clients:
                client.close()
        self._store.close()

    def _drain_outcomes(self) -> None:
        """Let every outcome told so far reach the health actor before it stops.

        The supervisor gathers outcomes for a few milliseconds before it tells them on; a
        command makes it send them at once, and an ask of the health actor returns after it
        observed them (its transitions then wait in the supervisor's mailbox, ahead of the
        stop). Without this, the health actor could stop first and the supervisor would log
        outcomes it could no longer deliver.
        """
        for ref, message in (
            (self._supervisor, Command(lambda r: None)),
            (self._health, SNAPSHOT),
        ):
            try:
                ref.ask(message, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass

    def _check_open(self) -> None:
        if self._closed:
            raise RoutingError("the runtime is closed")

    # -- actor plumbing ---------------------------------------------------------------------

    def _ask(self, ref: pykka.ActorRef[Any], message: Any) -> Any:
        try:
            return ref.ask(message, timeout=ASK_TIMEOUT_S)
        except pykka.ActorDeadError:
            self._check_open()
            raise RoutingError("an actor of the runtime is not running") from None
        except pykka.Timeout:
            raise RoutingError(f"no answer from an actor within {ASK_TIMEOUT_S:g} s") from None

    def _command(self, fn: Callable[[Router], T]) -> T:
        self._check_open()
        result: T = self._ask(self._supervisor, Command(fn))
        return result

    def _query(self, fn: Callable[[Any], T]) -> T:
        result: T = self._ask(self._writer, Query(fn))
        return result

    # -- requests ---------------------------------------------------------------------------

    def _prepare(
        self,
        request: Request,
        preferred_provider: str | None,
        requirements: Requirements | None,
        pool: str | None,
        ab_test: str | None,
    ) -> RouteQuery:
        self._check_open()
        try:
            validate_request(request)
        except RequestError as exc:
            rid = str(getattr(request, "request_id", ""))
            error = exc
            self._supervisor.tell(Notify(lambda r: r.rejected(rid, error)))
            raise
        return RouteQuery(request, requirements, preferred_provider, pool, ab_test)

    def _driver(self, query: RouteQuery) -> Any:
        now = self._clock.monotonic()
        budget_s = query.request.deadline or self.config.failover.default_deadline_s
        return drive(
            query,
            failover=self.config.failover,
            timeouts=self._timeouts,
            clock=self._clock,
            rng=self.rng,
            started=now,
            deadline_at=now + budget_s if budget_s else float("inf"),
        )

    def complete(
        self,
        request: Request,
        preferred_provider: str | None = None,
        *,
        requirements: Requirements | None = None,
        pool: str | None = None,
        ab_test: str | None = None,
    ) -> Response:
        """Send ``request`` to the best provider, failing over as configured.

        Raises:
            RequestError: The request is malformed (nothing was sent).
            BadRequest: A provider rejected the request itself (not retried anywhere).
            RoutingError: No provider could serve it (``AllProvidersFailed`` lists attempts).
        """
        if isinstance(request, Request) and request.stream:  # else _prepare refuses it
            request = msgspec.structs.replace(request, stream=False)
        query = self._prepare(request, preferred_provider, requirements, pool, ab_test)
        key = None
        if self._cache is not None:
            key = cache_key(
                request,
                preferred_provider=preferred_provider,
                requirements=requirements,
                pool=pool,
                ab_test=ab_test,
            )
            hit = self._cache.get(key)
            if hit is not None:
                response = msgspec.structs.replace(
                    hit, request_id=request.request_id, cached=True, latency_ms=0.0, attempts=0
                )
                served = functools.partial(_served_from_cache, query, response)
                self._supervisor.tell(Notify(served))
                return response
        response = self._execute(self._driver(query), query)
        assert isinstance(response, Response)
        if self._cache is not None and key is not None:
            self._cache.put(key, response)
        return response

    def _execute(self, gen: Any, query: RouteQuery) -> Any:
        """Perform the driver's effects for real until it returns or raises."""
        send: Any = None
        throw: BaseException | None = None
        first = True
        seen = 0  # capacity generation before the last decision: no release is missed
        supervisor = self._supervisor
        while True:
            try:
                effect = gen.throw(throw) if throw is not None else gen.send(send)
            except StopIteration as stop:
                return stop.value
            send = throw = None
            kind = type(effect)
            try:
                if kind is Decide:
                    seen = self._signal.generation
                    send = self._ask(
                        supervisor,
                        DecideAttempt(
                            query,
                            effect.attempt,
                            effect.tried,
                            effect.banned,
                            first,
                            not_before=effect.not_before,
                        ),
                    )
                    first = False
                elif kind is Call:
                    send = self._call(effect.decision, query.request, effect.timeout_s)
                elif kind is Report:
                    self._report(effect.outcome, effect.final, query)
                elif kind is Sleep:
                    self._clock.sleep(effect.seconds)
                elif kind is AwaitCapacity:
                    send = self._await_capacity(seen, effect.timeout_s)
            except Exception as exc:
                throw = exc

    def _call(self, decision: Decision, request: Request, timeout_s: float) -> Any:
        wire = self._handles[decision.route.provider].wire
        primed = False
        try:
            if wire is None:
                raise ProviderConnectError(
                    "provider actor is not running", provider=decision.route.provider
                )
            if not request.stream:
                return wire.complete(request, decision.model, timeout_s=timeout_s)
            result = self._open_stream(wire, decision, request, timeout_s)
            primed = True
            return result
        finally:
            if not primed:
                decision.budget.release()

    def _open_stream(
        self, wire: WireAdapter, decision: Decision, request: Request, timeout_s: float
    ) -> _Primed:
        start = self._clock.monotonic()
        it = wire.stream(request, decision.model, timeout_s=timeout_s)
        try:
            first = next(it)
        except StopIteration:
            raise StreamInterrupted(
                "stream ended before its first chunk", provider=decision.route.provider
            ) from None
        except BaseException:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            raise
        return _Primed(first, it, (self._clock.monotonic() - start) * 1000.0)

    def _report(self, outcome: Outcome | None, final: Final | None, query: RouteQuery) -> None:
        if outcome is not None:
            self._handles[outcome.provider].record(outcome)
        try:
            self._supervisor.tell(ReportAttempt(query, outcome, final))
        except pykka.ActorDeadError:
            log.error("supervisor is gone; outcome of %s not recorded", query.request.request_id)

    def _await_capacity(self, seen: int, timeout_s: float) -> bool:
        with self._waiting_lock:
            if self._waiting >= self.config.failover.max_queue:
                return False
            self._waiting += 1
        try:
            return self._signal.wait(seen, timeout_s)
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def stream(
        self,
        request: Request,
        preferred_provider: str | None = None,
        *,
        requirements: Requirements | None = None,
        pool: str | None = None,
        ab_test: str | None = None,
    ) -> Iterator[StreamChunk]:
        """Stream an answer; failover happens only before the first chunk reaches the caller.

        After that, a broken stream raises :class:`StreamInterrupted` (it is never re-run
        silently). Closing the iterator early releases the provider's slot.
        """
        if isinstance(request, Request) and not request.stream:  # else _prepare refuses it
            request = msgspec.structs.replace(request, stream=True)
        query = self._prepare(request, preferred_provider, requirements, pool, ab_test)
        return self._stream(query)

    def _stream(self, query: RouteQuery) -> Iterator[StreamChunk]:
        success = self._execute(self._driver(query), query)
        assert isinstance(success, Success)
        primed: _Primed = success.value
        decision = success.decision
        request = query.request
        provider = decision.route.provider
        answer = StreamedAnswer(decision.model)

        def attempt_ms() -> float:
            return (self._clock.monotonic() - success.attempt_started) * 1000.0

        def total_ms() -> float:
            return (self._clock.monotonic() - success.started) * 1000.0

        def report(error: ProviderError | None, response: Response | None) -> None:
            failed = success.failed_providers
            if error is not None and not isinstance(error, StreamCancelled):
                failed = (*failed, provider)
            outcome = Outcome(
                request_id=request.request_id,
                attempt=decision.attempt,
                provider=provider,
                model=decision.model.name,
                latency_ms=attempt_ms(),
                ts=self._clock.time(),
                error=error,
                usage=answer.usage,
                cost=answer.cost,
                ttft_ms=primed.ttft_ms,
                stream=True,
                probe=decision.probe,
            )
            self._report(
                outcome, Final(response, error, decision.attempt, total_ms(), failed), query
            )

        try:
            chunk = primed.first
            while True:
                answer.add(chunk)
                yield chunk
                try:
                    chunk = next(primed.rest)
                except StopIteration:
                    break
        except GeneratorExit:
            # A caller that stops once the final chunk (finish reason and usage) arrived has
            # the whole answer: it completed, and is recorded (and billed) as such below.
            if answer.finish_reason is None:
                report(
                    StreamCancelled(
                        "the caller stopped reading the stream",
                        provider=provider,
                        request_id=request.request_id,
                    ),
                    None,
                )
                raise
        except ProviderError as exc:
            err = (
                exc
                if isinstance(exc, StreamInterrupted)
                else StreamInterrupted(
                    f"stream broke after its first chunk: {type(exc).__name__}: {exc.message}",
                    provider=provider,
                    request_id=request.request_id,
                    status=exc.status,
                )
            )
            err.provider = err.provider or provider
            err.request_id = err.request_id or request.request_id
            report(err, None)
            raise err from (exc if err is not exc else None)
        finally:
            close = getattr(primed.rest, "close", None)
            if close is not None:
                close()
            decision.budget.release()
        report(
            None,
            answer.response(
                provider=provider,
                request_id=request.request_id,
                latency_ms=attempt_ms(),
                attempts=decision.attempt,
            ),
        )

    async def acomplete(
        self,
        request: Request,
        preferred_provider: str | None = None,
        *,
        requirements: Requirements | None = None,
        pool: str | None = None,
        ab_test: str | None = None,
    ) -> Response:
        """Like :meth:`complete`, on the runtime's worker threads (never blocks the loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            functools.partial(
                self.complete,
                request,
                preferred_provider,
                requirements=requirements,
                pool=pool,
                ab_test=ab_test,
            ),
        )

    async def astream(
        self,
        request: Request,
        preferred_provider: str | None = None,
        *,
        requirements: Requirements | None = None,
        pool: str | None = None,
        ab_test: str | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Like :meth:`stream`, each chunk fetched on a worker thread."""
        loop = asyncio.get_running_loop()
        it = self.stream(
            request, preferred_provider, requirements=requirements, pool=pool, ab_test=ab_test
        )
        try:
            while True:
                chunk = await loop.run_in_executor(self._executor, next, it, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                await loop.run_in_executor(self._executor, close)

    # -- routing without a call -------------------------------------------------------------

    def route_request(
        self, request: Request, requirements: Requirements | None = None
    ) -> RouteResult:
        """Return the routing decision for ``request`` without sending it (recorded)."""
        validate_request(request)
        query = RouteQuery(request, requirements)
        decision = self._ask(
            self._supervisor, DecideAttempt(query, 1, {}, frozenset(), False, reserve=False)
        )
        assert decision is not None
        route: RouteResult = decision.route
        return route

    def find_capable_providers(self, model: str) -> list[str]:
        """Return the providers serving ``model``."""
        return self._command(lambda r: r.find_capable(model))

    def estimate_cost(self, request: Request) -> dict[str, CostEstimate]:
        """Return the estimated cost of ``request`` on each provider serving its model."""
        validate_request(request)
        return self._command(lambda r: r.estimate_costs(request))

    # -- providers --------------------------------------------------------------------------

    def list_providers(self) -> list[str]:
        """Return the configured provider names."""
        return list(self._handles)

    def get_provider(self, name: str) -> ProviderConfig:
        """Return a provider's configuration with its current priority and limit."""
        handle = self._handles.get(name)
        if handle is None:
            raise RequestError(f"unknown provider {name!r}")
        priority = self._command(lambda r: r.providers[name].priority)
        return msgspec.structs.replace(
            handle.config, priority=priority, max_concurrency=handle.budget.limit
        )

    def set_provider_priority(self, provider: str, priority: int) -> None:
        """Change a provider's priority (higher is preferred); recorded as an event.

        Raises:
            ConfigError: ``priority`` is not an int.
        """
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigError([f"priority for {provider!r} must be an int, got {priority!r}"])
        self._command(lambda r: r.set_priority(provider, priority))

    def set_concurrent_limit(self, provider: str, limit: int) -> None:
        """Change a provider's concurrency budget at once; recorded as an event."""
        self._command(lambda r: r.set_limit(provider, limit))

    def get_active_requests(self, provider: str | None = None) -> int | dict[str, int]:
        """Return requests in flight: for one provider, or a dict of all."""
        if provider is not None:
            handle = self._handles.get(provider)
            if handle is None:
                raise RequestError(f"unknown provider {provider!r}")
            return handle.budget.in_flight
        return {n: h.budget.in_flight for n, h in self._handles.items()}

    def get_provider_health(self) -> dict[str, ProviderHealth]:
        """Return every provider's health (``disabled`` for providers taken out of service)."""
        health: dict[str, ProviderHealth] = self._ask(self._health, SNAPSHOT)
        disabled = self._command(
            lambda r: {n: p.disabled_reason for n, p in r.providers.items() if p.disabled_reason}
        )
        for name, reason in disabled.items():
            health[name] = msgspec.structs.replace(
                health[name], healthy=False, state="disabled", last_error=reason
            )
        return health

    def health_check(self) -> dict[str, HealthCheckResult]:
        """Probe every provider now (free probes, in parallel) and return the results."""
        self._check_open()
        timeout = self.config.health.probe_timeout_s

        def probe(handle: ProviderHandle) -> ProbeResult:
            return handle.probe(timeout, self._clock.monotonic)

        probes = list(self._executor.map(probe, list(self._handles.values())))
        for p in probes:
            self._health.tell(p)
        results = {
            p.provider: HealthCheckResult(
                provider=p.provider, healthy=p.ok, latency_ms=p.latency_ms, error=p.error
            )
            for p in probes
        }
        ts = self._clock.time()
        events = [
            HealthProbed(
                ts=ts,
                provider=r.provider,
                healthy=r.healthy,
                latency_ms=r.latency_ms,
                error=r.error,
            )
            for r in results.values()
        ]
        self._supervisor.tell(Notify(lambda r: r.emit(list(events))))
        return results

    def tick(self) -> None:
        """Make the health actor act on the clock's current time now (for virtual clocks)."""
        self._ask(self._health, TICK)

    # -- pools and A/B tests ----------------------------------------------------------------

    def create_pool(self, pool: PoolConfig) -> None:
        """Add a named pool of providers with its own strategy and weights."""
        self._command(lambda r: r.create_pool(pool))

    def get_from_pool(self, name: str, request: Request | None = None) -> str:
        """Return the provider the pool's strategy picks (for ``request``, if given)."""
        if request is not None:
            validate_request(request)
        probe = request or Request(model="", messages=[])
        query = RouteQuery(probe, None, None, name)
        decision = self._ask(
            self._supervisor,
            DecideAttempt(
                query, 1, {}, frozenset(), False, reserve=False, any_model=request is None
            ),
        )
        assert decision is not None
        provider: str = decision.route.provider
        return provider

    def setup_ab_test(self, test: ABTestConfig) -> None:
        """Add an A/B test; any seed metrics it carries count in its results."""
        self._command(lambda r: r.setup_ab_test(test))

    def get_for_ab_test(self, name: str, *, key: str | None = None) -> ABAssignment:
        """Assign a variant of test ``name`` (sticky when ``key`` is given); recorded."""
        return self._command(lambda r: r.ab.assign(name, key=key))

    def record_ab_test_metrics(
        self,
        name: str,
        variant: str,
        *,
        latency_ms: float,
        cost: float | None = None,
        error: bool = False,
    ) -> None:
        """Record a manual outcome for a variant of an A/B test."""
        self._command(
            lambda r: r.ab.record(name, variant, latency_ms=latency_ms, cost=cost, error=error)
        )

    def get_ab_test_results(self, name: str) -> dict[str, ABVariantResult]:
        """Return the results of test ``name`` per variant (``"A"``, ``"B"``)."""
        self._command(lambda r: r.ab.get(name))  # an unknown test is a RequestError
        return self._query(lambda p: p.ab.results(name))

    # -- figures ----------------------------------------------------------------------------

    def get_metrics(self) -> dict[str, ProviderMetrics]:
        """Return per-provider figures (equal to those replayed from the log)."""
        return self._query(lambda p: p.metrics.snapshot())

    def get_usage(self, period: str = "day") -> UsageReport:
        """Return usage in the current ``hour``, ``day``, ``week``, ``month``, or ``all``."""
        now = self._clock.time()
        report: UsageReport = self._query(lambda p: p.usage.report(period, now=now))
        return report

    def on(self, event: str, callback: Callable[[Any], None]) -> None:
        """Call ``callback(event)`` for each event named ``event`` (``complete``, ...)."""
        self._bus.on(event, callback)

    def clear_cache(self) -> None:
        """Drop cached responses and cached routes."""
        if self._cache is not None:
            self._cache.clear()
        self._command(lambda r: r.clear_cache())

    def flush(self) -> None:
        """Return when every event of the calls that returned so far is durable in the log.

        Outcomes travel by ``tell`` (caller -> supervisor -> health actor -> supervisor ->
        log writer), so each actor is asked in that order: an ask is answered only after
        every earlier message. Health transitions caused by those calls are included.

        Raises:
            StoreError: The store is failing (the events stay buffered).
        """
        self._command(lambda r: None)
        self._ask(self._health, SNAPSHOT)
        self._command(lambda r: None)
        self._ask(self._writer, Flush())


def _ready(handle: ProviderHandle) -> bool:
    return handle.wire is not None


def _served_from_cache(query: RouteQuery, response: Response, router: Router) -> None:
    router.received(query)
    router.finished(None, Final(response, None, 0, 0.0), query)
