"""Several runtimes, one log: who leads, and each runtime's lease of every concurrency budget.

A runtime alone on its log writes nothing here and behaves exactly as a runtime always did.
The first time it folds another runtime's events (:class:`SharedLog` is the log writer's
``on_folded`` hook), the log is *shared*: from then on the runtime writes a
``daemon.heartbeat`` event every third of ``lease_ttl_s``, off the request path, through the
group-committing log writer. The log is the only channel between runtimes: no socket, no
lock, no side table.

**Leadership.** Runtimes are named by their start time (``daemon`` ids sort in start order).
The leader is the live runtime with the smallest id; a runtime is live while its last
heartbeat is younger than its ``ttl_s`` and it did not say it is stopping. Only the leader's
circuit breakers move, record transitions and probe (see :mod:`routeledger.actors._health`);
the others adopt what it recorded. A leader that dies is replaced once its lease expires.

**Capacity leases** (``RuntimeConfig.shared_concurrency = "lease"``, the default). Each
provider's ``max_concurrency`` (``L``) is split between the live runtimes: with ``n`` of
them, each is granted ``L // n``, the first ``L % n`` (in id order) one more. A runtime uses
at most ``min(grant, L - claims of the others)``, where a runtime's claim (in its heartbeat)
is the most slots it may hold: its usable share, or its requests in flight if more (a shrunk
share drains, it does not cancel). So the sum over runtimes stays within ``L`` once each has
seen the others' heartbeats; a runtime whose own heartbeat has not been committed for two
thirds of its lease takes no new slot (the others may soon count it dead). A runtime that
dies frees its share when its lease expires; one that closes frees it at once (its last
heartbeat says ``stopping``). Another runtime known only from its events (no heartbeat yet)
is assumed to claim its grant. ``"local"``: every runtime uses the whole ``L`` (as if
alone). ``"strict"`` belongs to the PostgreSQL store (an advisory lock per request holds
the total exactly), so leases are off in that mode too.

**Spend budgets.** With budgets configured, the events of other runtimes that the spend fold
reads (attempts' costs, requests' tags, ``budget.exceeded`` / ``budget.reset``) are folded
into this runtime's budgets too (:mod:`routeledger.actors._budgets`), so a budget counts
every runtime's spend. Reservations stay each runtime's own.

**Rate limits.** A ``provider.rate_limited`` mark another runtime recorded (a
``Retry-After`` or a reset header, see :mod:`routeledger.actors._ratelimit`) is folded into
this runtime's marks (:meth:`routeledger.actors._router.Router.honour_rate_limit`): one code
path with its own marks, on the events' wall-clock time. When rpm/tpm limits are configured,
the others' ``attempt.started`` (and how those attempts ended) are charged into this
runtime's buckets (:class:`~routeledger.actors._protocol.ChargePeerAttempts`, see
:mod:`routeledger.actors._buckets`), so the limits hold in total, as the provider counts.

A runtime that starts on a log others already share learns them from the heartbeats at the
log's tail (:meth:`SharedLog.prime`) before it serves. Known limit: two runtimes that start
on an unshared log within one poll of each other may each use their whole budget, and each
lead, until they have seen each other's first heartbeat (a poll or two plus a commit); a
transition decided in that window may be recorded twice.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from routeledger.actors._budgets import SPEND_EVENTS
from routeledger.actors._protocol import (
    ChargePeerAttempts,
    HonourRetryAfter,
    ObserveLog,
    ObserveSpend,
)
from routeledger.events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    CircuitStateChanged,
    DaemonHeartbeat,
    Event,
    ProviderRateLimited,
)

if TYPE_CHECKING:
    from routeledger.actors._budget import Budget
    from routeledger.actors._clock import Clock

__all__ = ["SharedLog", "SharedLogView", "daemon_id", "grants"]

log = logging.getLogger("routeledger")

STALE_SHARE = 2 / 3
"""A runtime whose own heartbeat is older than this share of its lease takes no new slot."""


def daemon_id(wall_now: float) -> str:
    """Return a new runtime's id: its start time first, so that ids sort in start order."""
    return f"{int(wall_now * 1e6):020d}-{os.getpid()}-{secrets.token_hex(3)}"


def grants(limit: int, daemons: Sequence[str], daemon: str) -> int:
    """Return ``daemon``'s fair part of ``limit`` among ``daemons`` (sorted ids)."""
    n = len(daemons)
    rank = daemons.index(daemon)
    return limit // n + (1 if rank < limit % n else 0)


class SharedLogView(NamedTuple):
    """What a runtime knows of the runtimes sharing its log (``Runtime.get_shared_log()``)."""

    daemon: str
    """This runtime's id."""
    shared: bool
    """Another runtime's events were seen: heartbeats and leases are on."""
    leader: bool
    """This runtime records circuit transitions and probes."""
    peers: list[str]
    """The other live runtimes, by id."""
    slots: dict[str, int]
    """Per provider, the slots this runtime may hold now (its share, or the whole limit)."""


class _Peer:
    __slots__ = ("claims", "seen", "stopping", "ttl_s")

    def __init__(self, beat: DaemonHeartbeat, seen: float) -> None:
        self.claims = dict(beat.claims)
        self.seen = seen
        self.ttl_s = beat.ttl_s
        self.stopping = beat.stopping


class SharedLog:
    """This runtime's view of the other runtimes sharing its log (see the module docstring).

    ``on_folded`` runs on the log writer's thread; the heartbeat thread renews the leases.
    Everything it tells goes to actors by ``tell``: the writer's thread never waits.

    Args:
        daemon: This runtime's id (:func:`daemon_id`).
        mode: ``RuntimeConfig.shared_concurrency``.
        ttl_s: ``RuntimeConfig.lease_ttl_s``.
        clock: The runtime's clock (monotonic for liveness, wall time for events).
        budgets: Each provider's concurrency budget.
        append: Sends events to the log writer.
        rate_limited: Some provider or model has rpm/tpm limits: the others' attempts are
            charged into this runtime's buckets.
    """

    def __init__(
        self,
        *,
        daemon: str,
        mode: str,
        ttl_s: float,
        clock: Clock,
        budgets: Mapping[str, Budget],
        append: Callable[[list[Event]], None],
        rate_limited: bool = False,
    ) -> None:
        self.daemon = daemon
        self.mode = mode
        self.ttl_s = ttl_s
        self.clock = clock
        self.budgets = dict(budgets)
        self._append = append
        self._rate_limited = rate_limited
        self.health: pykka.ActorRef[Any] | None = None
        self.supervisor: pykka.ActorRef[Any] | None = None
        self.shared = False
        """Another runtime's events were seen: heartbeats and leases are on."""
        self._peers: dict[str, _Peer] = {}
        self._anonymous_until = 0.0
        """Until then, an unnamed runtime (events, no heartbeat yet) counts as live."""
        self._own_seen: float | None = None
        self._shared_since = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.follow_spend = False
        """Pass the spend events of other runtimes to routing (the runtime has budgets)."""

    # -- what others do ---------------------------------------------------------------------

    def on_folded(self, batch: Sequence[tuple[int, Event]], own: bool) -> None:
        """Take in a batch the log writer folded; never raises (it runs on the writer)."""
        try:
            if own:
                if self.shared:
                    for _, event in batch:
                        if type(event) is DaemonHeartbeat and event.daemon == self.daemon:
                            self._own_seen = self.clock.monotonic()
                return
            self._foreign([event for _, event in batch])
        except pykka.ActorDeadError:
            pass  # the runtime is closing: its health actor or supervisor already stopped
        except Exception:
            log.exception("shared log: following another runtime's events failed")

    def _foreign(self, events: list[Event]) -> None:
        mono, wall = self.clock.monotonic(), self.clock.time()
        health: list[Event] = []
        spend: list[Event] = []
        attempts: list[Event] = []
        beats = False
        with self._lock:
            for event in events:
                kind = type(event)
                if kind is DaemonHeartbeat:
                    assert isinstance(event, DaemonHeartbeat)
                    if event.daemon != self.daemon:
                        if event.daemon not in self._peers:
                            self._wake.set()  # a newcomer learns our claims at once
                        self._peers[event.daemon] = _Peer(event, mono)
                        self._anonymous_until = 0.0  # the unnamed runtime has a name now
                        beats = True
                    continue
                if self.follow_spend and kind in SPEND_EVENTS:
                    spend.append(event)
                if kind is AttemptSucceeded or kind is CircuitStateChanged or kind is AttemptFailed:
                    health.append(event)
                    if kind is not CircuitStateChanged:
                        attempts.append(event)
                elif kind is AttemptStarted:
                    attempts.append(event)
                elif kind is ProviderRateLimited:
                    assert isinstance(event, ProviderRateLimited)
                    if event.until > wall and self.supervisor is not None:
                        self.supervisor.tell(HonourRetryAfter(event))
            if not beats and not self._peers:
                # Events of a runtime not named by any heartbeat yet (it heartbeats as soon as
                # it sees ours); once runtimes are named, their events are theirs.
                self._anonymous_until = mono + self.ttl_s
            became_shared = not self.shared
            if became_shared:
                self.shared = True
                self._shared_since = mono
        if health and self.health is not None:
            self.health.tell(ObserveLog(health))
        if spend and self.supervisor is not None:
            self.supervisor.tell(ObserveSpend(spend))
        if attempts and self._rate_limited and self.supervisor is not None:
            self.supervisor.tell(ChargePeerAttempts(attempts))
        if became_shared:
            log.info("event log shared with another runtime; heartbeats and leases on")
            self._wake.set()  # heartbeat now: the others learn of us at once
        self.apply_shares()

    def prime(self, events: Iterable[Event]) -> None:
        """Take in the heartbeats at the log's tail when this runtime starts.

        A runtime joining runtimes that already share the log knows them (and their claims)
        before it serves, instead of using its whole budget until their next heartbeat. Only
        heartbeats count: a log last written by a runtime alone (this one's predecessor, say)
        has none. A heartbeat is live for the rest of its lease, reckoned in wall-clock time.
        """
        mono, wall = self.clock.monotonic(), self.clock.time()
        with self._lock:
            for event in events:
                if type(event) is not DaemonHeartbeat:
                    continue
                assert isinstance(event, DaemonHeartbeat)
                if event.daemon == self.daemon:
                    continue
                age = max(0.0, wall - event.ts)
                self._peers[event.daemon] = _Peer(event, mono - age)
            live = self._live(mono)
            if live:
                self.shared = True
                self._shared_since = mono
        if live:
            log.info(
                "event log shared with %d other runtime(s); heartbeats and leases on", len(live)
            )
            self._wake.set()
            self.apply_shares()

    # -- leadership and leases --------------------------------------------------------------

    def _live(self, mono: float) -> list[str]:
        return sorted(
            name for name, p in self._peers.items() if not p.stopping and mono - p.seen < p.ttl_s
        )

    def leader(self) -> bool:
        """Return whether this runtime leads: it records circuit transitions and probes."""
        if not self.shared:
            return True
        with self._lock:
            live = self._live(self.clock.monotonic())
        return not live or live[0] > self.daemon

    def peers(self) -> list[str]:
        """Return the ids of the other live runtimes this runtime knows of."""
        with self._lock:
            return self._live(self.clock.monotonic())

    def view(self) -> SharedLogView:
        """Return what this runtime knows of the others, as plain values."""
        return SharedLogView(
            daemon=self.daemon,
            shared=self.shared,
            leader=self.leader(),
            peers=self.peers(),
            slots={name: b.cap for name, b in self.budgets.items()},
        )

    def apply_shares(self) -> None:
        """Set each budget's usable share from the latest heartbeats (off the request path)."""
        if not self.shared or self.mode != "lease":
            return  # "local": each runtime alone; "strict": the store's slots hold the total
        mono = self.clock.monotonic()
        with self._lock:
            live = self._live(mono)
            claims = [self._peers[name].claims for name in live]
            anonymous = not live and mono < self._anonymous_until
        stale_after = self.ttl_s * STALE_SHARE
        seen = self._own_seen if self._own_seen is not None else self._shared_since
        stale = mono - seen > stale_after
        if not live and not anonymous:
            for budget in self.budgets.values():
                budget.set_share(None if not stale else 0)
            return
        daemons = sorted([*live, self.daemon] + (["~anonymous"] if anonymous else []))
        changed = False
        for name, budget in self.budgets.items():
            limit = budget.limit
            grant = grants(limit, daemons, self.daemon)
            # An unnamed runtime (no heartbeat yet) is assumed to use its grant.
            others = limit - grant if anonymous else sum(c.get(name, 0) for c in claims)
            share = 0 if stale else max(0, min(grant, limit - others))
            changed = changed or share != budget.share
            budget.set_share(share)
        if changed:
            self._wake.set()  # the others learn the new claim now, not at the next renewal

    def _claims(self) -> dict[str, int]:
        return {name: max(b.cap, b.in_flight) for name, b in self.budgets.items()}

    # -- the heartbeat thread ---------------------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat thread (idle until the log is shared)."""
        self._thread = threading.Thread(target=self._run, name="routeledger-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread; a shared runtime says it is stopping (frees its share)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.shared:
            self._beat(stopping=True)

    def _beat(self, *, stopping: bool = False) -> None:
        beat = DaemonHeartbeat(
            ts=self.clock.time(),
            daemon=self.daemon,
            ttl_s=self.ttl_s,
            claims={} if stopping else self._claims(),
            stopping=stopping,
        )
        try:
            self._append([beat])
        except Exception:
            log.exception("shared log: the heartbeat could not be sent")

    def _run(self) -> None:
        interval = self.ttl_s / 3
        while not self._stop.is_set():
            self._wake.wait(interval if self.shared else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.shared:
                self.apply_shares()
                self._beat()
