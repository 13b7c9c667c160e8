"""The provider actor: one per configured provider.

It owns the provider's HTTP client and wire adapter (created in ``on_start``, so a provider
that cannot start is a crashed actor the supervisor sees) and runs its free health probes.
What other threads need without a round trip is shared on a :class:`ProviderHandle`: the
adapter the callers use to make their HTTP calls on their own threads, the concurrency budget
they reserve and release atomically, and the statistics folded from every outcome.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pykka

from routeledger.actors._budget import Budget
from routeledger.actors._messages import Outcome, ProviderStats
from routeledger.actors._protocol import (
    PING,
    Ping,
    ProbeRequested,
    ProbeResult,
    ProviderCrashed,
    ProviderMessage,
)
from routeledger.actors._stats import StatsTracker
from routeledger.actors.wire import HTTPAdapter, make_adapter, make_client
from routeledger.events import ProviderConnectError

if TYPE_CHECKING:
    import httpx

    from routeledger.actors._supervisor import SupervisorActor
    from routeledger.actors.wire import WireAdapter
    from routeledger.events import ProviderConfig, Secret

__all__ = ["PING", "AdapterFactory", "ProviderActor", "ProviderHandle", "default_adapter_factory"]

log = logging.getLogger("routeledger")

AdapterFactory = Callable[["ProviderConfig", "Secret | None"], tuple["WireAdapter", "httpx.Client"]]
"""Build a provider's adapter and the client it uses (tests inject faults here)."""


def default_adapter_factory(
    config: ProviderConfig, api_key: Secret | None
) -> tuple[WireAdapter, httpx.Client]:
    """Build the real adapter for ``config.kind`` over a new HTTP client."""
    client = make_client(config)
    return make_adapter(config, client=client, api_key=api_key), client


class ProviderHandle:
    """What a provider shares with the other threads without a round trip.

    The actor publishes its adapter here; the calling threads reserve and release the
    budget, and fold each attempt's outcome into the statistics (under a lock, on the thread
    that saw the outcome: one less actor hop per request); the supervisor reads them.
    """

    __slots__ = (
        "_lock",
        "_tracker",
        "actor_ref",
        "budget",
        "clients",
        "config",
        "name",
        "on_headers",
        "stats",
        "wire",
        "wires",
    )

    def __init__(
        self, config: ProviderConfig, budget: Budget, stats: ProviderStats | None = None
    ) -> None:
        self.name = config.name
        self.config = config
        self.budget = budget
        self.stats = stats if stats is not None else ProviderStats()
        self._tracker = StatsTracker(self.stats)
        self._lock = threading.Lock()
        self.wire: WireAdapter | None = None
        self.wires: list[WireAdapter] = []
        """One adapter per API key (the first is ``wire``) when the provider has several."""
        self.actor_ref: pykka.ActorRef[Any] | None = None
        # Every client this provider ever opened; closed when the runtime closes (a
        # restarted actor's old client may still serve calls in flight).
        self.clients: list[httpx.Client] = []
        self.on_headers: Callable[[httpx.Headers], None] | None = None
        """Given to the adapter: reads the rate-limit headers of every response."""

    def read_stats(self) -> ProviderStats:
        """Return the latest published statistics."""
        return self.stats

    def record(self, outcome: Outcome) -> None:
        """Fold an attempt's outcome into the statistics."""
        with self._lock:
            self.stats = self._tracker.record(outcome)

    def probe(self, timeout_s: float, monotonic: Callable[[], float]) -> ProbeResult:
        """Run the adapter's free probe on this thread; never raise.

        With several API keys, the provider is up when a probe with any key succeeds (one
        revoked key is the key's problem, not the provider's): the others are tried in turn
        after an authentication error.
        """
        from routeledger.events import AuthenticationError, RouteledgerError

        start = monotonic()
        wire = self.wire
        try:
            if wire is None:
                raise ProviderConnectError("provider actor is not running", provider=self.name)
            try:
                wire.probe(timeout_s=timeout_s)
            except AuthenticationError:
                if not self._probe_other_keys(timeout_s):
                    raise
        except RouteledgerError as exc:
            error: str | None = f"{type(exc).__name__}: {exc.message}"[:300]
        except Exception as exc:  # a probe's failure is a result, never a crash
            error = type(exc).__name__
        else:
            error = None
        return ProbeResult(self.name, error is None, (monotonic() - start) * 1000.0, error)

    def _probe_other_keys(self, timeout_s: float) -> bool:
        """Return whether a probe with one of the provider's other keys succeeds."""
        from routeledger.events import AuthenticationError

        for wire in self.wires[1:]:
            try:
                wire.probe(timeout_s=timeout_s)
            except AuthenticationError:
                continue
            return True
        return False


class ProviderActor(pykka.ThreadingActor):
    """Owns one provider's client, adapter and statistics."""

    # A runtime that is never closed must not keep the process alive; the runtime's
    # exit hook closes it (and flushes the log) before daemon threads are stopped.
    use_daemon_thread = True

    def __init__(
        self,
        handle: ProviderHandle,
        *,
        api_key: Secret | None,
        supervisor: pykka.ActorRef[SupervisorActor] | None,
        monotonic: Callable[[], float],
        adapter_factory: AdapterFactory = default_adapter_factory,
        more_keys: Sequence[Secret] = (),
    ) -> None:
        super().__init__()
        self.handle = handle
        self._api_key = api_key
        self._more_keys = tuple(more_keys)
        self._supervisor = supervisor
        self._monotonic = monotonic
        self._factory = adapter_factory

    def on_start(self) -> None:
        """Open the client and build the adapter; a failure here crashes the actor."""
        keys = [self._api_key, *self._more_keys]
        wires = []
        try:
            for key in keys:
                wire, client = self._factory(self.handle.config, key)
                self.handle.clients.append(client)
                wires.append(wire)
        except Exception as exc:
            # pykka does not call on_failure for a failing on_start: report it ourselves.
            self.on_failure(type(exc), exc, exc.__traceback__)
            raise
        for wire, key in zip(wires, keys, strict=True):
            if isinstance(wire, HTTPAdapter):
                if self.handle.on_headers is not None:
                    wire.on_headers = self.handle.on_headers
                if self._more_keys:
                    wire.also_redact = tuple(k for k in keys if k is not None and k is not key)
        self.handle.wires = wires
        self.handle.wire = wires[0]

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """Tell the supervisor this actor died, so that it restarts or disables it."""
        reason = f"{getattr(exception_type, '__name__', 'error')}: {exception_value}"
        if self._supervisor is not None:
            try:
                self._supervisor.tell(ProviderCrashed(self.handle.name, reason[:300]))
            except pykka.ActorDeadError:
                pass

    def on_receive(self, message: ProviderMessage) -> Any:
        """Handle one message (tells never raise: a raising tell would kill the actor)."""
        match message:
            case Ping():
                return True
            case ProbeRequested():
                # The probe is I/O: run it beside the actor so that the mailbox never waits.
                threading.Thread(
                    target=self._probe_and_reply,
                    args=(message,),
                    name=f"routeledger-probe-{self.handle.name}",
                    daemon=True,
                ).start()
            case _:
                # A bug: let the actor crash, so that supervision restarts it and says why.
                raise TypeError(f"provider actor got an unknown message {type(message).__name__}")
        return None

    def _probe_and_reply(self, message: ProbeRequested) -> None:
        result = self.handle.probe(message.timeout_s, self._monotonic)
        try:
            message.reply_to.tell(result)
        except pykka.ActorDeadError:
            pass
