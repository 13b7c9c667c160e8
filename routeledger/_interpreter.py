"""The threaded interpreter of the failover policy: a request's life on real threads.

:func:`~routeledger.actors._failover.run_request` says what happens to a request as a series
of effects; this module performs them for real, on the caller's thread: a decision and a
record enter the supervisor's :class:`~routeledger.actors._desk.RoutingDesk` under its lock (a
decision also reserves the slot; no actor round trip), an attempt is an HTTP call through the
provider's adapter, and a pause is a sleep on the injected clock. It is the twin of the
simulation's event loop (:class:`routeledger.sim.Simulation`), which performs the same
effects on virtual time.

A completion runs the policy to its end (:meth:`ThreadedInterpreter.complete`). A stream is a
generator (:meth:`ThreadedInterpreter.stream`): the policy runs until the first chunk, then
its :class:`~routeledger.actors._failover.Relay` effect hands the chunks to the caller one by
one, and how the relay ended goes back into the policy, which records it.

Every run has a :class:`~routeledger.actors.wire.CancelScope`. Cancelling it (an async caller's
task was cancelled, or :meth:`ThreadedInterpreter.drain` gave up waiting at shutdown) shuts
down the socket of the attempt in flight and ends pauses and waits: the attempt ends as
:class:`~routeledger.events.AttemptCancelled` (never counted against its provider), its slot
is released, and the policy records the request's end as cancelled or ``shutdown``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from routeledger._answer import StreamedAnswer
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
    attempt_cancelled,
    cancelled_end,
    start_request,
)
from routeledger.actors.wire import CancelScope
from routeledger.events import (
    ProviderConnectError,
    ProviderError,
    Response,
    StreamChunk,
    StreamInterrupted,
)

if TYPE_CHECKING:
    import random

    from routeledger._observe import RequestObserver, RequestWatch
    from routeledger.actors._clock import Clock
    from routeledger.actors._desk import RoutingDesk
    from routeledger.actors._messages import Decision, RouteQuery
    from routeledger.actors._provider import ProviderHandle
    from routeledger.actors._waitqueue import Ticket, WaitQueue
    from routeledger.actors.wire import WireAdapter
    from routeledger.events import FailoverConfig, Request

__all__ = ["ThreadedInterpreter"]

log = logging.getLogger("routeledger")

Policy = Generator[Effect, Any, Response | None]


class ThreadedInterpreter:
    """Performs the failover policy's effects with actors, HTTP and the clock.

    Args:
        desk: The routing desk (decisions and records).
        handles: Each provider's shared handle (adapter, budget, statistics).
        signal: The queue of callers waiting for capacity (served by priority when a slot
            is released).
        failover: The failover settings.
        clock: The clock.
        rng: The RNG of backoff jitter.
    """

    def __init__(
        self,
        *,
        desk: RoutingDesk,
        handles: dict[str, ProviderHandle],
        signal: WaitQueue,
        failover: FailoverConfig,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._desk = desk
        self._handles = handles
        self._signal = signal
        self._failover = failover
        self._clock = clock
        self._rng = rng
        self._timeouts = {name: h.config.timeout_s for name, h in handles.items()}
        # The scopes of the runs in flight, for drain() at shutdown.
        self._live: set[CancelScope] = set()
        self._idle = threading.Condition(threading.Lock())
        self.observer: RequestObserver | None = None
        """Watches each request's decisions and records (tracing); see ``_observe``."""

    def _start(self, query: RouteQuery) -> Policy:
        return start_request(
            query,
            failover=self._failover,
            timeouts=self._timeouts,
            clock=self._clock,
            rng=self._rng,
        )

    # -- the two ways a request runs --------------------------------------------------------

    def complete(self, query: RouteQuery, scope: CancelScope | None = None) -> Response:
        """Run a completion to its end and return its response (or raise its error)."""
        run = _Run(self, query, scope or CancelScope())
        self._enter(run.scope)
        try:
            policy = self._start(query)
            send: Any = None
            throw: BaseException | None = None
            while True:
                try:
                    effect = policy.throw(throw) if throw is not None else policy.send(send)
                except StopIteration as stop:
                    assert isinstance(stop.value, Response)
                    return stop.value
                send, throw = run.perform(effect)
        finally:
            self._leave(run.scope)

    def stream(self, query: RouteQuery, scope: CancelScope | None = None) -> Iterator[StreamChunk]:
        """Run a stream: yield its chunks once one provider's first chunk has arrived."""
        # The request starts now, on this thread (its trace span's parent is the caller's).
        return self._stream(_Run(self, query, scope or CancelScope()))

    def _stream(self, run: _Run) -> Iterator[StreamChunk]:
        query = run.query
        self._enter(run.scope)
        try:
            policy = self._start(query)
            send: Any = None
            throw: BaseException | None = None
            while True:
                try:
                    effect = policy.throw(throw) if throw is not None else policy.send(send)
                except StopIteration:
                    return
                if type(effect) is not Relay:
                    send, throw = run.perform(effect)
                    continue
                relay = _StreamRelay(effect.stream, effect.decision, run.scope)
                try:
                    yield from relay.chunks()
                except GeneratorExit:
                    # The caller closed the stream: record how far it got (the policy's last
                    # effects), then let the generator close.
                    _record_end(policy, run, relay.stop_early())
                    return
                assert relay.end is not None
                send, throw = relay.end, None
        finally:
            self._leave(run.scope)

    # -- runs in flight ---------------------------------------------------------------------

    def _enter(self, scope: CancelScope) -> None:
        with self._idle:
            self._live.add(scope)

    def _leave(self, scope: CancelScope) -> None:
        with self._idle:
            self._live.discard(scope)
            if not self._live:
                self._idle.notify_all()

    def cancel(self, scope: CancelScope, reason: str = "cancelled") -> None:
        """Cancel one run (see :class:`CancelScope`), waking it if it waits for capacity."""
        scope.cancel(reason)
        self._signal.interrupt()

    def drain(self, grace_s: float, *, settle_s: float = 2.0) -> int:
        """Wait up to ``grace_s`` for the requests in flight, then cancel the rest.

        Cancelled requests end at once (their sockets are shut down); this waits up to
        ``settle_s`` more for them to record their ends. Returns how many were cancelled.
        """
        deadline = time.monotonic() + grace_s  # shutdown runs on real time, whatever the clock
        with self._idle:
            while self._live and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            rest = list(self._live)
        for scope in rest:
            scope.cancel("shutdown")
        if rest:
            self._signal.interrupt()  # wake requests waiting for capacity
            settle = time.monotonic() + settle_s
            with self._idle:
                while self._live and (left := settle - time.monotonic()) > 0:
                    self._idle.wait(left)
        return len(rest)

    # -- effects shared by both -------------------------------------------------------------

    def _call(self, decision: Decision, request: Request, timeout_s: float) -> Any:
        """Send one attempt; the slot is released when it ends (a stream: when relayed)."""
        handle = self._handles[decision.route.provider]
        wire = handle.wire
        if wire is not None and decision.key:
            wire = handle.wires[decision.key]  # the provider's other keys (actors._keys)
        opened = False
        try:
            if wire is None:
                raise ProviderConnectError(
                    "provider actor is not running", provider=decision.route.provider
                )
            if not request.stream:
                return wire.complete(request, decision.model, timeout_s=timeout_s)
            result = self._open_stream(wire, decision, request, timeout_s)
            opened = True
            return result
        finally:
            if not opened:
                decision.budget.release()

    def _open_stream(
        self, wire: WireAdapter, decision: Decision, request: Request, timeout_s: float
    ) -> OpenedStream:
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
        return OpenedStream(first, it, (self._clock.monotonic() - start) * 1000.0)

    def _record(self, effect: Record, query: RouteQuery) -> None:
        if effect.outcome is not None:
            self._handles[effect.outcome.provider].record(effect.outcome)
        self._desk.record(query, effect.outcome, effect.ended)

    def _await_capacity(self, run: _Run, timeout_s: float) -> bool:
        if run.ticket is None:
            run.ticket = self._signal.ticket(run.query.request.priority)
        run.woken = self._signal.wait_turn(
            run.ticket, run.seen, timeout_s, max_queue=self._failover.max_queue
        )
        return run.woken


class _Run:
    """One request's run through the interpreter: what its next effects depend on."""

    __slots__ = ("first", "interpreter", "query", "scope", "seen", "ticket", "watch", "woken")

    def __init__(
        self, interpreter: ThreadedInterpreter, query: RouteQuery, scope: CancelScope
    ) -> None:
        self.interpreter = interpreter
        self.query = query
        self.scope = scope
        budget_s = query.request.deadline or interpreter._failover.default_deadline_s
        if budget_s and scope.deadline is None:
            # On real time: the deadline bounds every socket read of the run, streams included.
            scope.deadline = time.monotonic() + budget_s
        self.first = True
        # The capacity generation before the last decision: no release in between is missed.
        self.seen = 0
        # The request's place in the wait queue (made at its first wait), and whether it
        # is its turn to ask the router (the next decision ends the turn).
        self.ticket: Ticket | None = None
        self.woken = False
        observer = interpreter.observer
        self.watch: RequestWatch | None = (
            None if observer is None else observer.request_started(query)
        )

    def perform(self, effect: Effect) -> tuple[Any, BaseException | None]:
        """Perform one effect; return what to send into the policy, or what to throw."""
        it = self.interpreter
        scope = self.scope
        rid = self.query.request.request_id
        if self.woken and type(effect) is not Choose:
            # A turn that ends without a decision (the deadline passed meanwhile, or the run
            # was cancelled): the next waiter's turn begins.
            self._end_turn()
        try:
            if scope.reason is not None and type(effect) is not Record:
                return self._stopped(effect, scope.reason)
            match effect:
                case Choose(attempt, tried, banned, not_before, waiting, rekey, context_over):
                    self.seen = it._signal.generation
                    first, self.first = self.first, False
                    try:
                        decision = it._desk.decide(
                            self.query,
                            attempt=attempt,
                            tried=tried,
                            banned=banned,
                            first=first,
                            not_before=not_before,
                            again=waiting,
                            rekey=rekey,
                            context_over=context_over,
                        )
                    finally:
                        self._end_turn()
                    if self.watch is not None:
                        self.watch.chose(decision)
                    return decision, None
                case Send(decision, timeout_s):
                    try:
                        return scope.call(it._call, decision, self.query.request, timeout_s), None
                    except ProviderError:
                        if scope.reason is None:
                            raise
                        # Our own cancel broke the exchange: not the provider's failure.
                        provider = decision.route.provider
                        return None, attempt_cancelled(scope.reason, provider, rid)
                case Record():
                    if self.watch is not None:
                        self.watch.recorded(effect)
                    it._record(effect, self.query)
                case Pause(seconds):
                    scope.sleep(it._clock, seconds)
                case AwaitCapacity(timeout_s):
                    freed = it._await_capacity(self, timeout_s)
                    if scope.reason is not None:
                        return None, cancelled_end(scope.reason, rid)
                    return freed, None
                case Relay():
                    raise TypeError("a completion's policy asked to relay a stream")
        except Exception as exc:
            return None, exc
        return None, None

    def _end_turn(self) -> None:
        """End this run's turn in the wait queue, if it has one."""
        if self.woken:
            self.woken = False
            assert self.ticket is not None
            self.interpreter._signal.done(self.ticket)

    def _stopped(self, effect: Effect, reason: str) -> tuple[Any, BaseException | None]:
        """Answer ``effect`` of a cancelled run: it goes no further."""
        self._end_turn()
        rid = self.query.request.request_id
        if type(effect) is Send:
            effect.decision.budget.release()  # the policy counts on the call releasing it
            return None, attempt_cancelled(reason, effect.decision.route.provider, rid)
        if type(effect) is Pause:
            return None, None  # the next decision is refused
        return None, cancelled_end(reason, rid)


class _StreamRelay:
    """Passes an opened stream's chunks to the caller and folds them into its answer.

    The provider's slot is released as soon as the stream ends, however it ends.
    """

    __slots__ = ("_closed", "answer", "decision", "end", "opened", "scope")

    def __init__(self, opened: OpenedStream, decision: Decision, scope: CancelScope) -> None:
        self.opened = opened
        self.decision = decision
        self.scope = scope
        self.answer = StreamedAnswer(decision.model)
        self.end: StreamEnd | None = None
        self._closed = False

    def chunks(self) -> Iterator[StreamChunk]:
        """Yield every chunk; set :attr:`end` when the stream ends by itself."""
        chunk = self.opened.first
        rest = self.opened.rest
        scope = self.scope
        try:
            while True:
                self.answer.add(chunk)
                yield chunk
                # The scope is entered per read, never across a yield: the caller may
                # resume this generator from another thread (astream does).
                try:
                    chunk = scope.call(next, rest)
                except StopIteration:
                    break
        except ProviderError as exc:
            self._close()
            usage, cost = self.answer.usage, self.answer.cost
            if scope.reason is not None:
                self.end = StreamEnd(cancelled=True, usage=usage, cost=cost, reason=scope.reason)
            else:
                self.end = StreamEnd(error=exc, usage=usage, cost=cost)
            return
        self._close()
        self.end = self._whole()

    def stop_early(self) -> StreamEnd:
        """Close the stream at the caller's request; return how it ended.

        A caller that stops once the final chunk (finish reason and usage) arrived has the
        whole answer: it completed, and is recorded (and billed) as such.
        """
        self._close()
        if self.answer.finish_reason is not None:
            self.end = self._whole()
        else:
            # A task cancelled just as its chunk arrived closes the stream here, after the
            # runtime cancelled its scope: the scope's reason says who stopped it.
            self.end = StreamEnd(
                cancelled=True,
                usage=self.answer.usage,
                cost=self.answer.cost,
                reason=self.scope.reason,
            )
        return self.end

    def _whole(self) -> StreamEnd:
        response = self.answer.response(
            provider=self.decision.route.provider,
            request_id=self.decision.route.request_id,
            latency_ms=0.0,  # the policy sets the attempt's latency
            attempts=self.decision.attempt,
        )
        return StreamEnd(response=response, usage=self.answer.usage, cost=self.answer.cost)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self.opened.rest, "close", None)
            if close is not None:
                close()
        finally:
            self.decision.budget.release()


def _record_end(policy: Policy, run: _Run, end: StreamEnd) -> None:
    """Feed a stream's end to the policy and perform the records it makes."""
    send: Any = end
    while True:
        try:
            effect = policy.send(send)
        except StopIteration:
            return
        except Exception:
            log.exception("recording the end of a stream failed")
            return
        send, _ = run.perform(effect)
