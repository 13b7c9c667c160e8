"""What each actor may be sent, grouped by recipient: one written protocol per actor.

Every message is a tiny immutable value. An *ask* waits for the answer named in its
docstring (an exception raised while handling it goes back to the caller); a *tell* returns
nothing, and its handler never raises (a raising tell would kill the actor). Each actor
dispatches on its union (``SupervisorMessage``, ``HealthMessage``, ``ProviderMessage``,
``WriterMessage``) with ``match``.

Who sends what (a request's decisions and outcomes are no messages: the caller's thread
enters the :class:`~routeledger.actors._desk.RoutingDesk` for them):

- the runtime asks the supervisor for operator changes and questions, tells it records made
  off the request path, and asks the log writer for figures;
- the routing desk tells the health actor outcomes and the log writer events, in batches;
- the health actor tells the supervisor circuit transitions and provider actors to probe;
- a provider actor tells the supervisor that it crashed, and the health actor its probes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import pykka

    from routeledger.actors._circuit import Transition
    from routeledger.actors._health import HealthActor
    from routeledger.actors._messages import Outcome, RouteQuery
    from routeledger.events import (
        ABTestConfig,
        Event,
        PoolConfig,
        ProviderRateLimited,
        Request,
        Response,
    )

__all__ = [
    "PING",
    "SYNC",
    "TICK",
    "Append",
    "ApplyHealth",
    "AssignABVariant",
    "ChargePeerAttempts",
    "ClearRoutes",
    "CloseLog",
    "CreatePool",
    "DescribeLog",
    "DescribeProvider",
    "DisabledProviders",
    "EstimateCosts",
    "FindCapable",
    "Flush",
    "FollowLog",
    "GetABResults",
    "GetBudgets",
    "GetHealth",
    "GetMetrics",
    "GetUsage",
    "HealthMessage",
    "HonourRetryAfter",
    "ObserveLog",
    "ObserveSpend",
    "Ping",
    "ProbeRequested",
    "ProbeResult",
    "ProviderCrashed",
    "ProviderMessage",
    "RecordABMetrics",
    "RecordCacheHit",
    "RecordEvents",
    "RecordOutcomes",
    "RecordRejected",
    "SetLimit",
    "SetPriority",
    "SetupABTest",
    "SupervisorMessage",
    "Sync",
    "Tick",
    "UseHealth",
    "WriterMessage",
]


# -- to the supervisor: records made off the request path ------------------------------------


class RecordRejected(NamedTuple):
    """Tell: a request was refused before any provider was tried."""

    request_id: str
    error: Exception


class RecordCacheHit(NamedTuple):
    """Tell: a request was answered from the response cache."""

    query: RouteQuery
    response: Response


class RecordEvents(NamedTuple):
    """Tell: record these events in order with the routing decisions (health probes)."""

    events: list[Event]


# -- to the supervisor: operator changes and questions -----------------------------------------


class SetPriority(NamedTuple):
    """Ask: change a provider's priority. Answer: ``None``."""

    provider: str
    priority: int


class SetLimit(NamedTuple):
    """Ask: change a provider's concurrency limit. Answer: ``None``."""

    provider: str
    limit: int


class CreatePool(NamedTuple):
    """Ask: add a pool (``replace``: over one of that name). Answer: ``None``."""

    pool: PoolConfig
    replace: bool = False


class SetupABTest(NamedTuple):
    """Ask: add an A/B test (``replace``: over one of that name). Answer: ``None``."""

    test: ABTestConfig
    replace: bool = False


class AssignABVariant(NamedTuple):
    """Ask: assign a variant of a test (sticky by ``key``). Answer: an ``ABAssignment``."""

    name: str
    key: str | None


class RecordABMetrics(NamedTuple):
    """Ask: record a manual outcome for a variant. Answer: ``None``."""

    name: str
    variant: str
    latency_ms: float
    cost: float | None
    error: bool


class FindCapable(NamedTuple):
    """Ask: the enabled providers serving a model. Answer: ``list[str]``."""

    model: str


class GetBudgets(NamedTuple):
    """Ask: every spend budget's figures now. Answer: ``list[BudgetStatus]``."""


class EstimateCosts(NamedTuple):
    """Ask: a request's estimated cost per provider. Answer: ``dict[str, CostEstimate]``."""

    request: Request


class DescribeProvider(NamedTuple):
    """Ask: a provider's current priority. Answer: ``int``."""

    provider: str


class DisabledProviders(NamedTuple):
    """Ask: the providers taken out of service. Answer: ``dict[str, str]`` (name: reason)."""


class ClearRoutes(NamedTuple):
    """Ask: drop routing caches (none are kept today). Answer: ``None``."""


class Sync(NamedTuple):
    """Ask: answer ``None`` once every earlier message has been handled (a barrier)."""


# -- to the supervisor: from the other actors ---------------------------------------------------


class UseHealth(NamedTuple):
    """Tell: forward attempt outcomes to this health actor."""

    health: pykka.ActorRef[HealthActor]


class ApplyHealth(NamedTuple):
    """Tell (from the health actor): apply this circuit transition to routing, record it.

    ``record=False``: another runtime sharing the log recorded it; only apply it."""

    provider: str
    transition: Transition
    record: bool = True


class ObserveSpend(NamedTuple):
    """Tell (from the log follower): events other runtimes recorded that the spend fold
    reads (their attempts' costs, requests' tags, budget events), in position order."""

    events: list[Event]


class HonourRetryAfter(NamedTuple):
    """Tell (from the log follower): another runtime marked a provider rate-limited; fold
    its ``provider.rate_limited`` event into this runtime's marks (one code path with the
    runtime's own marks, see :mod:`routeledger.actors._ratelimit`)."""

    event: ProviderRateLimited


class ChargePeerAttempts(NamedTuple):
    """Tell (from the log follower): other runtimes' attempts (``attempt.started`` and how
    they ended) to charge into this runtime's rpm/tpm buckets (see
    :mod:`routeledger.actors._buckets`)."""

    events: list[Event]


class ProviderCrashed(NamedTuple):
    """Tell (from a provider actor): it died; restart it or disable the provider."""

    provider: str
    reason: str


SupervisorMessage = (
    RecordRejected
    | RecordCacheHit
    | RecordEvents
    | SetPriority
    | SetLimit
    | CreatePool
    | SetupABTest
    | AssignABVariant
    | RecordABMetrics
    | FindCapable
    | GetBudgets
    | EstimateCosts
    | DescribeProvider
    | DisabledProviders
    | ClearRoutes
    | Sync
    | UseHealth
    | ApplyHealth
    | ProviderCrashed
    | HonourRetryAfter
    | ObserveSpend
    | ChargePeerAttempts
)


# -- to the health actor ----------------------------------------------------------------------


class RecordOutcomes(NamedTuple):
    """Tell: how attempts ended, in order."""

    outcomes: list[Outcome]


class ProbeResult(NamedTuple):
    """Tell (from a provider actor, or the runtime's on-demand check): a probe's result."""

    provider: str
    ok: bool
    latency_ms: float
    error: str | None


class Tick(NamedTuple):
    """Ask: act on the clock's current time now (circuits due, probe rounds). Answer: None."""


class GetHealth(NamedTuple):
    """Ask: every provider's health. Answer: ``dict[str, ProviderHealth]``."""


class ObserveLog(NamedTuple):
    """Tell (from the log follower): events other runtimes sharing the log recorded, in
    position order (their outcomes, and the circuit transitions their leader recorded)."""

    events: list[Event]


HealthMessage = RecordOutcomes | ProbeResult | Tick | GetHealth | ObserveLog


# -- to a provider actor ----------------------------------------------------------------------


class ProbeRequested(NamedTuple):
    """Tell: run the free health probe and send the :class:`ProbeResult` to ``reply_to``."""

    timeout_s: float
    reply_to: pykka.ActorRef[HealthActor]


class Ping(NamedTuple):
    """Ask: answer ``True`` (the actor has started and is serving its mailbox)."""


ProviderMessage = ProbeRequested | Ping


# -- to the log writer ------------------------------------------------------------------------


class Append(NamedTuple):
    """Tell: append these events."""

    events: list[Event]


class Flush(NamedTuple):
    """Ask: commit everything received so far. Answer: ``True``; raises the store's error."""


class CloseLog(NamedTuple):
    """Ask: commit what is pending, retrying a failing store for up to ``grace_s`` seconds.

    Answer: a :class:`~routeledger.actors._writer.Unwritten` (what could not be written)."""

    grace_s: float


class GetMetrics(NamedTuple):
    """Ask: per-provider figures of what is committed. Answer: ``dict[str, ProviderMetrics]``."""


class GetUsage(NamedTuple):
    """Ask: usage in a period around ``now`` (Unix time; ``None``: the log's latest event).

    Answer: a ``UsageReport``.
    """

    period: str
    now: float | None


class GetABResults(NamedTuple):
    """Ask: an A/B test's results. Answer: ``dict[str, ABVariantResult]``."""

    name: str


class DescribeLog(NamedTuple):
    """Ask: the figures and the writer's state at one position (for exporters).

    Answer: a :class:`~routeledger.actors._writer.LogView`.
    """


class FollowLog(NamedTuple):
    """Tell: fold what other runtimes appended to the shared log since the last fold."""


WriterMessage = (
    Append | CloseLog | Flush | GetMetrics | GetUsage | GetABResults | DescribeLog | FollowLog
)

PING = Ping()
SYNC = Sync()
TICK = Tick()
