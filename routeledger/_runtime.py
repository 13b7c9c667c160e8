"""The :class:`Runtime` facade: start the actors, route requests through them, report figures.

A request runs on the caller's thread through the
:class:`~routeledger._interpreter.ThreadedInterpreter`: one ``ask`` of the supervisor per
attempt (the decision, with the slot reserved), the HTTP call through the provider's adapter,
and one ``tell`` of the outcome. Async callers get a bounded pool of worker threads, so the
event loop never blocks. Everything else here is the public API: operator changes and
questions are named messages to the supervisor, figures are questions to the log writer.

This module is over 500 lines because it is the public API: some thirty methods of the
contract, most of their lines docstrings. The mechanisms live elsewhere: the request's life in
``_interpreter``, start-up in ``_startup``, routing in ``actors``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import functools
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

from routeledger._cache import ResponseCache, cache_key
from routeledger._interpreter import ThreadedInterpreter
from routeledger._startup import config_digest, config_summary, fold_log
from routeledger.actors._buckets import RESUME_SCAN_EVENTS, HeaderReader, recent_attempts
from routeledger.actors._budget import Budget, RemoteReleases, check_strict, strict_slots
from routeledger.actors._bus import EventBus
from routeledger.actors._clock import Clock, SystemClock
from routeledger.actors._desk import BufferedEmitter, RoutingDesk
from routeledger.actors._follow import LogFollower
from routeledger.actors._health import HealthActor
from routeledger.actors._keys import fingerprint
from routeledger.actors._lease import SharedLog, SharedLogView, daemon_id
from routeledger.actors._messages import Decision, RouteQuery
from routeledger.actors._protocol import (
    PING,
    SYNC,
    TICK,
    Append,
    AssignABVariant,
    ClearRoutes,
    CloseLog,
    CreatePool,
    DescribeLog,
    DescribeProvider,
    DisabledProviders,
    EstimateCosts,
    FindCapable,
    Flush,
    GetABResults,
    GetBudgets,
    GetHealth,
    GetMetrics,
    GetUsage,
    ProbeResult,
    RecordABMetrics,
    RecordCacheHit,
    RecordEvents,
    RecordRejected,
    SetLimit,
    SetPriority,
    SetupABTest,
    UseHealth,
)
from routeledger.actors._provider import (
    AdapterFactory,
    ProviderActor,
    ProviderHandle,
    default_adapter_factory,
)
from routeledger.actors._resume import plan_resume
from routeledger.actors._router import Router
from routeledger.actors._supervisor import SupervisorActor
from routeledger.actors._waitqueue import WaitQueue
from routeledger.actors._writer import EventWriter, LogWriterActor, Unwritten
from routeledger.actors.wire import CancelScope
from routeledger.events import (
    ABAssignment,
    ABTestConfig,
    ABVariantResult,
    BudgetStatus,
    ConfigError,
    ConfigurationApplied,
    CostEstimate,
    HealthCheckResult,
    HealthProbed,
    PoolConfig,
    ProviderConfig,
    ProviderHealth,
    ProviderMetrics,
    Request,
    RequestError,
    Requirements,
    Response,
    RouteResult,
    RoutingError,
    RuntimeClosed,
    RuntimeConfig,
    StoreError,
    StreamChunk,
    UsageReport,
    validate_config,
    validate_request,
)
from routeledger.store import (
    EventStore,
    MemoryStore,
    forget_gaps,
    gap_base,
    open_store,
    shown_target,
    take_gaps,
)

if TYPE_CHECKING:
    from routeledger.actors._writer import LogView
    from routeledger.otel import RequestTracer
    from routeledger.prometheus import RuntimeCollector

__all__ = ["Runtime", "ShutdownReport"]

_T = TypeVar("_T")

log = logging.getLogger("routeledger")

ASK_TIMEOUT_S = 30.0
"""How long a caller waits for an actor's answer before calling the runtime broken."""

_OPEN: weakref.WeakSet[Runtime] = weakref.WeakSet()
"""Runtimes not closed yet: closed (so their logs are flushed) when the interpreter exits."""


@atexit.register
def _close_open_runtimes() -> None:
    for rt in list(_OPEN):
        try:
            rt.close()
        except Exception:
            log.exception("closing a runtime at exit failed")


CANCEL_SETTLE_S = 5.0
"""How long a cancelled async call waits for its worker to end (it ends at once)."""

CLOSE_GRACE_S = 10.0
"""How long ``close()`` waits for requests in flight, and then for a failing store."""


async def _settle(future: concurrent.futures.Future[Any]) -> None:
    """Wait (briefly) for a cancelled call's worker to end; its result is nobody's now."""
    waiter = asyncio.wrap_future(future)
    await asyncio.wait([waiter], timeout=CANCEL_SETTLE_S)
    if waiter.done() and not waiter.cancelled():
        waiter.exception()  # retrieved: the caller sees CancelledError instead


class ShutdownReport(NamedTuple):
    """What :meth:`Runtime.close` could not finish; all zero after a clean close."""

    cancelled_requests: int = 0
    """Requests still in flight after the grace period, ended with ``RuntimeClosed``."""
    unwritten_events: int = 0
    """Events the store refused until the end: not in the log."""
    store_error: str | None = None
    """Why they were refused."""
    gap_kept: bool = False
    """A gap event for them is kept beside the log file (a PostgreSQL log's: in the local state
    directory, see :mod:`routeledger.store._gaps`), for the next start to record."""

    @property
    def clean(self) -> bool:
        """Return whether nothing was cancelled or lost."""
        return not self.cancelled_requests and not self.unwritten_events


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
            event_log: A SQLite file path, a ``postgresql://`` URL (the ``postgres`` extra), a
                store, or ``None`` for an in-memory log.
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
        check_strict(config, event_log)
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
        self._report = ShutdownReport()
        self._environ = environ
        self._adapter_factory = adapter_factory
        self.rng = random.Random(seed)
        if event_log is None:
            self._store: EventStore = MemoryStore()
        elif isinstance(event_log, str | os.PathLike):
            # A path opens a SQLite file; a postgresql:// URL opens PostgresStore.
            self._store = open_store(event_log, synchronous=config.log.synchronous)
        else:
            self._store = event_log
        self.event_log_path = (  # a URL's password masked: this is shown in output
            shown_target(event_log) if isinstance(event_log, str | os.PathLike) else None
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
        self._signal = WaitQueue()
        shared = strict_slots(config, self._store)  # "strict": one database slot per request
        self._remote_releases = RemoteReleases(self._signal) if shared is not None else None

        # The log is the source of truth: live figures and routing state continue from it.
        projections = fold_log(self._store)
        # Taken before the writer folds this start's config.applied: the router applies the
        # configuration's budgets itself, to the same state.
        spend = projections.budgets.state()
        summary = config_summary(config)
        digest = config_digest(summary)
        resume, dropped = plan_resume(
            projections.routing,
            config,
            digest,
            wall_now=clock.time(),
            mono_now=clock.monotonic(),
        )
        event_writer = EventWriter(
            self._store,
            config=config.log,
            clock=clock,
            on_error=self._on_store_error,
            projections=projections,
        )
        self._writer = LogWriterActor.start(event_writer)
        emit = BufferedEmitter(self._writer, self._bus)
        # Events an earlier runtime could not write before it closed: its gap goes in first.
        log_file = gap_base(self._store)  # a URL log's gaps are kept in the local state dir
        kept_gaps = take_gaps(log_file) if log_file is not None else []
        if kept_gaps:
            emit(list(kept_gaps))
        if dropped is not None:
            emit([dropped])
        emit(
            [
                ConfigurationApplied(
                    ts=clock.time(),
                    config_version=resume.config_version,
                    digest=digest,
                    providers=[p.name for p in config.providers],
                    strategy=config.strategy,
                    summary=summary,
                )
            ]
        )
        self._handles: dict[str, ProviderHandle] = {
            p.name: ProviderHandle(
                p,
                Budget(p.max_concurrency, self._signal, shared=shared, provider=p.name),
                resume.stats.get(p.name),
            )
            for p in config.providers
        }
        # Other runtimes may share the log: this one follows it (see actors/_lease.py).
        self.daemon_id = daemon_id(clock.time())
        self._shared = SharedLog(
            daemon=self.daemon_id,
            mode=config.shared_concurrency,
            ttl_s=config.lease_ttl_s,
            clock=clock,
            budgets={n: h.budget for n, h in self._handles.items()},
            append=self._append_events,
            rate_limited=any(
                p.rpm or p.tpm or any(m.rpm or m.tpm for m in p.models) for p in config.providers
            ),
        )
        event_writer.on_folded = self._shared.on_folded
        self._shared.prime(_log_tail(self._store, projections.position))
        router = Router(
            config,
            budgets={n: h.budget for n, h in self._handles.items()},
            stats={n: h.read_stats for n, h in self._handles.items()},
            clock=clock,
            rng=self.rng,
            emit=emit,
            ready={n: functools.partial(_ready, h) for n, h in self._handles.items()},
            resume=resume,
            keys={
                p.name: [fingerprint(k) for k in p.resolve_api_keys(environ)]
                for p in config.providers
                if p.api_keys or p.api_key_envs
            },
            spend=spend,
        )
        if router.rate_limits.active:
            # The buckets continue from the last minute's attempts (see actors._buckets).
            first = max(1, self._store.last_position() - RESUME_SCAN_EVENTS)
            router.rate_limits.resume(
                recent_attempts(
                    (e for _, e in self._store.read(first, strict=False)),
                    wall_now=clock.time(),
                    mono_now=clock.monotonic(),
                ),
                clock.monotonic(),
            )
        for name, handle in self._handles.items():
            if router.rate_limits.limited(name):
                handle.on_headers = HeaderReader(router.rate_limits, name, clock.monotonic)
        emit.send()  # the configuration, pools and A/B tests, before anything else
        if kept_gaps:
            try:
                self._writer.ask(Flush(), timeout=ASK_TIMEOUT_S)
            except StoreError:
                pass  # still buffered: the gap file stays until a later start writes it
            else:
                forget_gaps(str(log_file))
        self._desk = RoutingDesk(router, emit)
        self._supervisor = SupervisorActor.start(
            desk=self._desk,
            handles=self._handles,
            restart=self._start_provider,
            clock=clock,
        )
        self._health = HealthActor.start(
            config.health,
            list(self._handles),
            clock=clock,
            supervisor=self._supervisor,
            provider_refs=self._provider_refs,
            active=active_health_checks,
            resumed=resume.circuits,
            leader=self._shared.leader,
        )
        self._supervisor.tell(UseHealth(self._health))
        self._shared.health = self._health
        self._shared.supervisor = self._supervisor
        self._shared.follow_spend = bool(config.budgets)
        self._shared.start()
        # A store in this process's memory has no other writer to follow.
        shared_log = self._shared  # the thread holds it, not the runtime
        self._follower = (
            None
            if isinstance(self._store, MemoryStore)
            else LogFollower(
                self._store,
                self._writer,
                lambda: event_writer.followed,
                shared=lambda: shared_log.shared,
            ).start()
        )
        self._requests = ThreadedInterpreter(
            desk=self._desk,
            handles=self._handles,
            signal=self._signal,
            failover=config.failover,
            clock=clock,
            rng=self.rng,
        )
        for name in self._handles:
            self._start_provider(name)
        for handle in self._handles.values():
            ref = handle.actor_ref
            if ref is None:
                continue
            try:  # wait until on_start ran (a failure there is handled by supervision)
                ref.ask(PING, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        # Only a fully built runtime can be closed at exit: one whose start failed (a newer
        # schema, a locked file) has no actors or executor to close.
        _OPEN.add(self)

    def _start_provider(self, name: str) -> None:
        handle = self._handles[name]
        config = handle.config
        keys = (
            config.resolve_api_keys(self._environ) if config.api_keys or config.api_key_envs else []
        )
        handle.actor_ref = ProviderActor.start(
            handle,
            api_key=keys[0] if keys else config.resolve_api_key(self._environ),
            more_keys=keys[1:],
            supervisor=self._supervisor,
            monotonic=self._clock.monotonic,
            adapter_factory=self._adapter_factory,
        )

    def _provider_refs(self) -> dict[str, pykka.ActorRef[ProviderActor]]:
        return {n: h.actor_ref for n, h in self._handles.items() if h.actor_ref is not None}

    def _append_events(self, events: list[Any]) -> None:
        """Send events made off the routing desk (heartbeats) to the log writer."""
        try:
            self._writer.tell(Append(events))
        except pykka.ActorDeadError:
            log.error("log writer is gone; %d events not recorded", len(events))

    def _on_store_error(self, error: StoreError | None) -> None:
        self.store_error = error

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, grace_s: float = CLOSE_GRACE_S) -> ShutdownReport:
        """Close gracefully; return what the shutdown could not finish (idempotent).

        New requests are refused at once with :class:`RuntimeClosed`. Requests in flight
        may finish within ``grace_s`` seconds; the rest are cancelled (their HTTP exchanges
        closed) and end with ``RuntimeClosed``, recorded with reason ``shutdown`` and never
        against their provider. Then the log is flushed, retrying a failing store for up to
        ``grace_s`` more; events it still cannot write are reported here and at ERROR, and
        kept as a gap event for the next start. Every actor and connection is closed.
        """
        with self._close_lock:
            if self._closed:
                return self._report
            self._closed = True
            _OPEN.discard(self)
        cancelled = self._requests.drain(grace_s)
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._remote_releases is not None:
            self._remote_releases.stop()
        # Refuse new decisions and send what gathered; let the health actor observe it (its
        # transitions then wait in the supervisor's mailbox, ahead of the stop), so nothing
        # is sent to an actor that already stopped.
        self._desk.close()
        try:
            self._health.ask(GetHealth(), timeout=ASK_TIMEOUT_S)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass
        refs: list[pykka.ActorRef[Any]] = [
            self._supervisor,
            self._health,
            *self._provider_refs().values(),
        ]
        for ref in refs:
            try:
                ref.stop(block=True, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        if self._follower is not None:
            self._follower.stop()
        self._shared.stop()  # a shared runtime's last heartbeat frees its leases at once
        unwritten = Unwritten()
        try:
            answer = self._writer.ask(CloseLog(grace_s), timeout=grace_s + ASK_TIMEOUT_S)
            if isinstance(answer, Unwritten):
                unwritten = answer
            self._writer.stop(block=True, timeout=ASK_TIMEOUT_S)
        except (pykka.ActorDeadError, pykka.Timeout):
            pass
        self._bus.close()
        for handle in self._handles.values():
            for client in handle.clients:
                client.close()
        self._store.close()
        self._report = ShutdownReport(
            cancelled_requests=cancelled,
            unwritten_events=unwritten.events,
            store_error=unwritten.error,
            gap_kept=unwritten.kept,
        )
        return self._report

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosed("the runtime is closed")

    # -- actor plumbing ---------------------------------------------------------------------

    def _ask(self, ref: pykka.ActorRef[Any], message: Any) -> Any:
        try:
            return ref.ask(message, timeout=ASK_TIMEOUT_S)
        except pykka.ActorDeadError:
            self._check_open()
            raise RoutingError("an actor of the runtime is not running") from None
        except pykka.Timeout:
            raise RoutingError(f"no answer from an actor within {ASK_TIMEOUT_S:g} s") from None

    def _ask_supervisor(self, message: Any) -> Any:
        """Ask the supervisor ``message`` (an operator change or question) on an open runtime."""
        self._check_open()
        return self._ask(self._supervisor, message)

    # -- requests ---------------------------------------------------------------------------

    def _prepare(
        self,
        request: Request,
        preferred_provider: str | None,
        requirements: Requirements | None,
        pool: str | None,
        ab_test: str | None,
        *,
        stream: bool,
    ) -> RouteQuery:
        self._check_open()
        if isinstance(request, Request) and request.stream != stream:  # else refused below
            request = msgspec.structs.replace(request, stream=stream)
        try:
            validate_request(request)
        except RequestError as exc:
            rid = str(getattr(request, "request_id", ""))
            self._supervisor.tell(RecordRejected(rid, exc))
            raise
        return RouteQuery(request, requirements, preferred_provider, pool, ab_test)

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
        query = self._prepare(
            request, preferred_provider, requirements, pool, ab_test, stream=False
        )
        return self._complete(query, None)

    def _complete(self, query: RouteQuery, scope: CancelScope | None) -> Response:
        request = query.request
        key = None
        if self._cache is not None:
            key = cache_key(
                request,
                preferred_provider=query.preferred_provider,
                requirements=query.requirements,
                pool=query.pool,
                ab_test=query.ab_test,
            )
            hit = self._cache.get(key)
            if hit is not None:
                response = msgspec.structs.replace(
                    hit, request_id=request.request_id, cached=True, latency_ms=0.0, attempts=0
                )
                self._supervisor.tell(RecordCacheHit(query, response))
                return response
        response = self._requests.complete(query, scope)
        if self._cache is not None and key is not None:
            self._cache.put(key, response)
        return response

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
        query = self._prepare(request, preferred_provider, requirements, pool, ab_test, stream=True)
        return self._requests.stream(query)

    async def acomplete(
        self,
        request: Request,
        preferred_provider: str | None = None,
        *,
        requirements: Requirements | None = None,
        pool: str | None = None,
        ab_test: str | None = None,
    ) -> Response:
        """Like :meth:`complete`, on the runtime's worker threads (never blocks the loop).

        Cancelling the awaiting task cancels the request: its HTTP exchange is closed, its
        slot released at once, and it is recorded as cancelled (not against the provider).
        """
        query = self._prepare(
            request, preferred_provider, requirements, pool, ab_test, stream=False
        )
        scope = CancelScope()
        future = self._submit(self._complete, query, scope)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._requests.cancel(scope)
            # The cancel makes the worker return at once; waiting for it means the slot is
            # free and the cancellation recorded when the caller sees CancelledError.
            await _settle(future)
            raise

    async def astream(
        self,
        request: Request,
        preferred_provider: str | None = None,
        *,
        requirements: Requirements | None = None,
        pool: str | None = None,
        ab_test: str | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Like :meth:`stream`, each chunk fetched on a worker thread.

        Cancelling the consuming task cancels the stream as :meth:`acomplete` does.
        """
        query = self._prepare(request, preferred_provider, requirements, pool, ab_test, stream=True)
        scope = CancelScope()
        it = self._requests.stream(query, scope)
        future: concurrent.futures.Future[StreamChunk | None] | None = None
        try:
            while True:
                future = self._submit(next, it, None)
                chunk = await asyncio.wrap_future(future)
                if chunk is None:
                    return
                yield chunk
        except asyncio.CancelledError:
            self._requests.cancel(scope)
            raise
        finally:
            if future is not None and not future.done():
                # The worker is inside next(it): closing the generator now would fail
                # ("generator already executing"). The cancel makes it return at once.
                await _settle(future)
            close = getattr(it, "close", None)
            if close is not None and (future is None or future.done()):
                close()  # records how far the stream got; no blocking I/O

    def _submit(self, fn: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        """Run ``fn`` on a worker thread; a closing runtime refuses new work clearly."""
        self._check_open()
        try:
            # The caller's context (its current trace span, say) goes with it to the worker.
            return self._executor.submit(contextvars.copy_context().run, fn, *args)
        except RuntimeError:  # the executor was shut down by close() meanwhile
            raise RuntimeClosed("the runtime is closed") from None

    # -- routing without a call -------------------------------------------------------------

    def route_request(
        self, request: Request, requirements: Requirements | None = None
    ) -> RouteResult:
        """Return the routing decision for ``request`` without sending it (recorded)."""
        validate_request(request)
        query = RouteQuery(request, requirements)
        self._check_open()
        decision = self._desk.decide(
            query, attempt=1, tried={}, banned=frozenset(), first=False, reserve=False
        )
        assert isinstance(decision, Decision)  # no reservation: never saturated or waiting
        route: RouteResult = decision.route
        return route

    def find_capable_providers(self, model: str) -> list[str]:
        """Return the providers serving ``model``."""
        providers: list[str] = self._ask_supervisor(FindCapable(model))
        return providers

    def get_budgets(self) -> list[BudgetStatus]:
        """Return every spend budget's spend and remaining amount in its current period.

        The figures are the spend folded from the log (``replay(log).budgets.status(now)``
        gives the same); reservations of attempts in flight are not included.
        """
        status: list[BudgetStatus] = self._ask_supervisor(GetBudgets())
        return status

    def estimate_cost(self, request: Request) -> dict[str, CostEstimate]:
        """Return the estimated cost of ``request`` on each provider serving its model."""
        validate_request(request)
        estimates: dict[str, CostEstimate] = self._ask_supervisor(EstimateCosts(request))
        return estimates

    # -- providers --------------------------------------------------------------------------

    def list_providers(self) -> list[str]:
        """Return the configured provider names."""
        return list(self._handles)

    def get_provider(self, name: str) -> ProviderConfig:
        """Return a provider's configuration with its current priority and limit."""
        handle = self._handles.get(name)
        if handle is None:
            raise RequestError(f"unknown provider {name!r}")
        priority = self._ask_supervisor(DescribeProvider(name))
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
        self._ask_supervisor(SetPriority(provider, priority))

    def set_concurrent_limit(self, provider: str, limit: int) -> None:
        """Change a provider's concurrency budget at once; recorded as an event."""
        self._ask_supervisor(SetLimit(provider, limit))

    def get_active_requests(self, provider: str | None = None) -> int | dict[str, int]:
        """Return requests in flight: for one provider, or a dict of all."""
        if provider is not None:
            handle = self._handles.get(provider)
            if handle is None:
                raise RequestError(f"unknown provider {provider!r}")
            return handle.budget.in_flight
        return {n: h.budget.in_flight for n, h in self._handles.items()}

    def get_shared_log(self) -> SharedLogView:
        """Return what this runtime knows of the other runtimes sharing its event log.

        ``daemon`` (this runtime's id), ``shared``, ``leader``, ``peers`` (the other live
        runtimes) and ``slots`` (per provider, how many calls this runtime may have in
        flight now: its lease, or the whole ``max_concurrency`` when alone). See the README's
        "Several daemons, one log".
        """
        return self._shared.view()

    def get_provider_health(self) -> dict[str, ProviderHealth]:
        """Return every provider's health (``disabled`` for providers taken out of service)."""
        health: dict[str, ProviderHealth] = self._ask(self._health, GetHealth())
        disabled: dict[str, str] = self._ask_supervisor(DisabledProviders())
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
        self._supervisor.tell(RecordEvents(list(events)))
        return results

    def tick(self) -> None:
        """Make the health actor act on the clock's current time now (for virtual clocks)."""
        self._ask(self._health, TICK)

    # -- pools and A/B tests ----------------------------------------------------------------

    def create_pool(self, pool: PoolConfig, *, replace: bool = False) -> None:
        """Add a named pool of providers with its own strategy and weights.

        Pools survive a restart on the same log (see the README's restart rule): creating the
        same pool again is a no-op; another pool under a taken name is a ``ConfigError``
        unless ``replace`` is set.
        """
        self._ask_supervisor(CreatePool(pool, replace))

    def get_from_pool(self, name: str, request: Request | None = None) -> str:
        """Return the provider the pool's strategy picks (for ``request``, if given)."""
        if request is not None:
            validate_request(request)
        probe = request or Request(model="", messages=[])
        query = RouteQuery(probe, None, None, name)
        self._check_open()
        decision = self._desk.decide(
            query,
            attempt=1,
            tried={},
            banned=frozenset(),
            first=False,
            reserve=False,
            any_model=request is None,
        )
        assert isinstance(decision, Decision)  # no reservation: never saturated or waiting
        provider: str = decision.route.provider
        return provider

    def setup_ab_test(self, test: ABTestConfig, *, replace: bool = False) -> None:
        """Add an A/B test; any seed metrics it carries count in its results.

        Tests survive a restart on the same log with their assignments and results: setting
        up the same test again is a no-op that keeps them; another test under a taken name
        is a ``ConfigError`` unless ``replace`` is set (the replacement starts afresh).
        """
        self._ask_supervisor(SetupABTest(test, replace))

    def get_for_ab_test(self, name: str, *, key: str | None = None) -> ABAssignment:
        """Assign a variant of test ``name`` (sticky when ``key`` is given); recorded."""
        assignment: ABAssignment = self._ask_supervisor(AssignABVariant(name, key))
        return assignment

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
        self._ask_supervisor(RecordABMetrics(name, variant, latency_ms, cost, error))

    def get_ab_test_results(self, name: str) -> dict[str, ABVariantResult]:
        """Return the results of test ``name`` per variant (``"A"``, ``"B"``).

        Results are the log's: a test dropped by a changed configuration still has them.

        Raises:
            RequestError: The log knows no such test.
        """
        # The barrier sends the supervisor's gathered events (a new test's) to the writer.
        self._ask_supervisor(SYNC)
        results: dict[str, ABVariantResult] = self._ask(self._writer, GetABResults(name))
        return results

    # -- figures ----------------------------------------------------------------------------

    def get_metrics(self) -> dict[str, ProviderMetrics]:
        """Return per-provider figures (equal to those replayed from the log)."""
        metrics: dict[str, ProviderMetrics] = self._ask(self._writer, GetMetrics())
        return metrics

    def get_usage(self, period: str = "day") -> UsageReport:
        """Return usage in the current ``hour``, ``day``, ``week``, ``month``, or ``all``.

        "Current" is the period of the log's latest request or of this runtime's start,
        exactly as ``replay(log).usage(period)`` reckons it, so the two always agree.
        """
        report: UsageReport = self._ask(self._writer, GetUsage(period, None))
        return report

    def prometheus_collector(self, registry: Any = None) -> RuntimeCollector:
        """Register a Prometheus collector of this runtime's figures and return it.

        The collector reads the figures when scraped (nothing is added to the request
        path). Needs the ``prometheus`` extra; see :mod:`routeledger.prometheus`.

        Args:
            registry: a ``prometheus_client.CollectorRegistry`` (default: the global one).
        """
        from routeledger.prometheus import register

        return register(self, registry=registry)

    def instrument_tracing(
        self, tracer_provider: Any = None, *, capture_content: bool = False
    ) -> RequestTracer:
        """Trace each request from now on with OpenTelemetry spans; return the tracer.

        Needs the ``otel`` extra; see :mod:`routeledger.otel` for the spans and attributes.

        Args:
            tracer_provider: an ``opentelemetry.trace.TracerProvider`` (default: the global).
            capture_content: record prompt and completion text (never, by default).
        """
        from routeledger.otel import instrument

        return instrument(self, tracer_provider=tracer_provider, capture_content=capture_content)

    def _describe_log(self) -> LogView:
        """Return the log writer's figures and state at one position (for exporters)."""
        view: LogView = self._ask(self._writer, DescribeLog())
        return view

    def on(self, event: str, callback: Callable[[Any], None]) -> None:
        """Call ``callback(event)`` for each event named ``event`` (``complete``, ...)."""
        self._bus.on(event, callback)

    def clear_cache(self) -> None:
        """Drop cached responses and cached routes."""
        if self._cache is not None:
            self._cache.clear()
        self._ask_supervisor(ClearRoutes())

    def flush(self) -> None:
        """Return when every event of the calls that returned so far is durable in the log,
        and the live figures have folded the log up to its head (other runtimes' events
        too, when several share it): then ``get_metrics() == replay(log).metrics``.

        A returned call's records wait on the routing desk; an ask of the supervisor sends
        them (events to the log writer, outcomes to the health actor). The health actor's
        transitions go back to the supervisor by ``tell``, so each actor is asked in that
        order (an ask is answered only after every earlier message): health transitions
        caused by those calls are included.

        Raises:
            StoreError: The store is failing (the events stay buffered).
        """
        self._ask_supervisor(SYNC)
        self._ask(self._health, GetHealth())
        self._ask_supervisor(SYNC)
        self._ask(self._writer, Flush())


TAIL_EVENTS = 512
"""How many of the log's last events a starting runtime reads for live heartbeats."""


def _log_tail(store: EventStore, position: int) -> list[Any]:
    """Return the last events of the log up to ``position`` (none if it cannot be read)."""
    if isinstance(store, MemoryStore) or position <= 0:
        return []
    try:
        start = max(1, position - TAIL_EVENTS + 1)
        return [e for _, e in store.read(start, limit=position - start + 1, strict=False)]
    except Exception as exc:  # a damaged tail was reported by the fold already
        log.debug("event log: the tail could not be read for heartbeats: %s", exc)
        return []


def _ready(handle: ProviderHandle) -> bool:
    return handle.wire is not None
