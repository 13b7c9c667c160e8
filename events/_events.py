"""The event model: every decision routeledger makes, as a tagged union of frozen Structs.

Each event is a past-tense fact with an explicit dotted wire tag. Events carry no API keys,
and no prompt or response text unless ``LogConfig.include_text`` opts in (the ``prompt`` and
``response_text`` fields stay ``None`` otherwise).

Schema evolution rules (these hold for every release):

1. A wire tag is never renamed or reused; a class may be renamed, its tag may not.
2. A new field always has a default, so older rows decode into the newer class.
3. A field's type never changes. A breaking change is a new tag (``...v2``) plus an upcaster
   in :data:`UPCASTERS` that turns the old event into the new one when reading.
4. Unknown fields in stored rows are ignored when decoding (rows written by a newer minor
   version still decode).
5. A row whose tag this version does not know raises :class:`UnknownEventType` in strict
   reads; a non-strict read skips it and counts it, never silently.

This module is over 500 lines because the stored schema is one concept: every event type is
here with its fields documented, beside the tag registry and the upcasters that read them
(``tests/golden/event_schema.json`` pins the whole of it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from routeledger.events._errors import StoreCorrupted, UnknownEventType

__all__ = [
    "CANCELLATIONS",
    "EVENT_TYPES",
    "UPCASTERS",
    "ABMetricsRecorded",
    "ABTestCreated",
    "ABVariantAssigned",
    "AnyEvent",
    "AttemptFailed",
    "AttemptStarted",
    "AttemptSucceeded",
    "BudgetLimitReached",
    "BudgetReset",
    "CircuitStateChanged",
    "ConcurrencyLimitChanged",
    "ConfigurationApplied",
    "DaemonHeartbeat",
    "Event",
    "EventsDropped",
    "FallbackExhausted",
    "FallbackSucceeded",
    "HealthProbed",
    "PoolCreated",
    "PriorityChanged",
    "ProviderDisabled",
    "ProviderFailed",
    "ProviderRateLimited",
    "ProviderRecovered",
    "ProviderRestarted",
    "ProviderUnhealthy",
    "RequestCompleted",
    "RequestFailed",
    "RequestReceived",
    "RequestRejected",
    "RouteDecided",
    "RuntimeChangesDropped",
    "decode_event",
    "encode_event",
    "event_tag",
]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """Base of every event; ``ts`` is the wall-clock time in Unix seconds (injected clock).

    Every event is built with keywords only (``kw_only=True`` on each subclass: msgspec applies
    it per class, not by inheritance). Each subclass declares ``ts: float`` as its last field
    rather than inheriting it: a base-class keyword-only field would be encoded first and change
    the bytes of every stored row. It is declared here for type checkers only.
    """

    if TYPE_CHECKING:
        ts: float


# --- requests -----------------------------------------------------------------------------


class RequestReceived(Event, frozen=True, kw_only=True, tag="request.received"):
    """A request entered the runtime."""

    request_id: str
    model: str
    stream: bool = False
    messages: int = 0
    estimated_input_tokens: int = 0
    max_tokens: int | None = None
    capabilities: list[str] = []
    metadata: dict[str, str] = {}
    deadline_s: float | None = None
    preferred_provider: str | None = None
    pool: str | None = None
    ab_test: str | None = None
    prompt: str | None = None
    session_id: str | None = None
    ts: float


class RequestRejected(Event, frozen=True, kw_only=True, tag="request.rejected"):
    """A request was refused before any provider was tried (invalid, or nothing can serve it)."""

    request_id: str
    error: str
    message: str
    ts: float


class RouteDecided(Event, frozen=True, kw_only=True, tag="route.decided"):
    """The supervisor ranked the candidates for one attempt.

    ``candidates`` are every configured provider considered; ``excluded`` maps each dropped
    provider to the filter that dropped it; ``scores`` are the strategy's scores (higher is
    better) for the rest; ``chosen`` is ``None`` when nothing was left.
    """

    request_id: str
    strategy: str
    candidates: list[str]
    excluded: dict[str, str] = {}
    scores: dict[str, float] = {}
    chosen: str | None = None
    model: str | None = None
    reason: str = ""
    confidence: float = 0.0
    alternatives: list[str] = []
    routing_version: int = msgspec.field(default=0, name="config_version")
    """Counts the changes to routing (circuits, priorities, limits, pools, A/B tests) made
    before this decision. Stored under its first name, ``config_version``."""
    attempt: int = 1
    pool: str | None = None
    sticky: bool = False
    """The request's session decided the provider (rendezvous hashing over the candidates)."""
    fallback_from: str | None = None
    """The request's own model, when every provider of it was exhausted and ``model`` is a
    configured fallback."""
    ts: float


class AttemptStarted(Event, frozen=True, kw_only=True, tag="attempt.started"):
    """An attempt was sent to a provider (its slot is reserved)."""

    request_id: str
    attempt: int
    provider: str
    model: str
    in_flight: int = 0
    key: str | None = None
    """The fingerprint of the API key used, when the provider has several (never the key)."""
    tokens: int = 0
    """The tokens its rpm/tpm buckets charged (set only when the provider has limits): what
    other runtimes on a shared log charge into theirs."""
    ts: float


class AttemptSucceeded(Event, frozen=True, kw_only=True, tag="attempt.succeeded"):
    """A provider answered an attempt successfully; ``cost`` is ``None`` when unpriced."""

    request_id: str
    attempt: int
    provider: str
    model: str
    latency_ms: float
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    stream: bool = False
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    ts: float


CANCELLATIONS = frozenset({"StreamCancelled", "AttemptCancelled"})
"""The ``error`` of an ``attempt.failed`` stopped by the caller or by the runtime: counted as
``cancelled``, never as the provider's failure."""


class AttemptFailed(Event, frozen=True, kw_only=True, tag="attempt.failed"):
    """An attempt failed; ``error`` is the error class name."""

    request_id: str
    attempt: int
    provider: str
    model: str
    error: str
    message: str = ""
    status: int | None = None
    retry_after_s: float | None = None
    retryable: bool = False
    maybe_billed: bool = False
    latency_ms: float = 0.0
    counts_against_health: bool = True
    ts: float


class FallbackSucceeded(Event, frozen=True, kw_only=True, tag="fallback.succeeded"):
    """A request succeeded on a provider after earlier attempts failed."""

    request_id: str
    provider: str
    attempts: int
    failed_providers: list[str] = []
    ts: float


class FallbackExhausted(Event, frozen=True, kw_only=True, tag="fallback.exhausted"):
    """Every allowed attempt of a request failed."""

    request_id: str
    attempts: int
    providers: list[str] = []
    last_error: str = ""
    ts: float


class RequestCompleted(Event, frozen=True, kw_only=True, tag="request.completed"):
    """A request's final outcome: success."""

    request_id: str
    provider: str
    model: str
    attempts: int
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    finish_reason: str | None = None
    stream: bool = False
    cached: bool = False
    response_text: str | None = None
    cached_input_tokens: int = 0
    """Parts of ``input_tokens`` read from, and written to, the prompt cache; reasoning
    tokens are part of ``output_tokens`` (as in :class:`~routeledger.events.Usage`)."""
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    ts: float


class RequestFailed(Event, frozen=True, kw_only=True, tag="request.failed"):
    """A request's final outcome: failure; ``error`` is the error class the caller saw."""

    request_id: str
    model: str
    error: str
    message: str = ""
    attempts: int = 0
    latency_ms: float = 0.0
    provider: str | None = None
    stream: bool = False
    ts: float


class BudgetLimitReached(Event, frozen=True, kw_only=True, tag="budget.exceeded"):
    """A spend budget's limit was reached in its current period (once per period)."""

    budget: str
    period: str
    period_start: float
    limit: float
    spent: float
    ts: float


class BudgetReset(Event, frozen=True, kw_only=True, tag="budget.reset"):
    """A new period began for a budget that was exceeded in an earlier one."""

    budget: str
    period: str
    period_start: float
    ts: float


# --- health ---------------------------------------------------------------------------------


class CircuitStateChanged(Event, frozen=True, kw_only=True, tag="circuit.state_changed"):
    """A provider's circuit moved between ``closed``, ``open`` and ``half_open``."""

    provider: str
    from_state: str
    to_state: str
    reason: str
    open_until: float | None = None
    trips: int = 0
    ts: float


class ProviderUnhealthy(Event, frozen=True, kw_only=True, tag="provider.unhealthy"):
    """A provider became unhealthy (its circuit opened); ``evidence`` says why."""

    provider: str
    reason: str
    evidence: dict[str, float] = {}
    ts: float


class ProviderRecovered(Event, frozen=True, kw_only=True, tag="provider.recovered"):
    """A provider became healthy again (its circuit closed)."""

    provider: str
    reason: str
    unhealthy_for_s: float = 0.0
    ts: float


class ProviderFailed(Event, frozen=True, kw_only=True, tag="provider.failed"):
    """A provider failed its health checks repeatedly, or was disabled."""

    provider: str
    reason: str
    evidence: dict[str, float] = {}
    ts: float


class ProviderRateLimited(Event, frozen=True, kw_only=True, tag="provider.rate_limited"):
    """A provider asked to be left alone until ``until`` (wall-clock Unix seconds).

    Recorded when an attempt is refused with a rate limit that says how long
    (``Retry-After``, ``retry-after-ms`` or a reset header): the whole provider is skipped,
    or waited for, until then. ``request_id`` names the attempt's request.
    """

    provider: str
    until: float
    retry_after_s: float
    request_id: str | None = None
    ts: float


class HealthProbed(Event, frozen=True, kw_only=True, tag="health.probed"):
    """An active probe of a provider finished."""

    provider: str
    healthy: bool
    latency_ms: float
    error: str | None = None
    ts: float


# --- runtime control ------------------------------------------------------------------------


class ConcurrencyLimitChanged(Event, frozen=True, kw_only=True, tag="provider.concurrency_changed"):
    """A provider's concurrency budget was changed."""

    provider: str
    old: int
    new: int
    ts: float


class PriorityChanged(Event, frozen=True, kw_only=True, tag="provider.priority_changed"):
    """A provider's priority was changed."""

    provider: str
    old: int
    new: int
    ts: float


class ProviderRestarted(Event, frozen=True, kw_only=True, tag="provider.restarted"):
    """A crashed provider actor was restarted by the supervisor."""

    provider: str
    reason: str
    restarts: int
    ts: float


class ProviderDisabled(Event, frozen=True, kw_only=True, tag="provider.disabled"):
    """A provider was taken out of service (restart intensity exceeded, or by the operator)."""

    provider: str
    reason: str
    ts: float


class PoolCreated(Event, frozen=True, kw_only=True, tag="pool.created"):
    """A named provider pool was created."""

    name: str
    providers: list[str]
    strategy: str
    weights: dict[str, float] | None = None
    ts: float


class ABTestCreated(Event, frozen=True, kw_only=True, tag="ab.test_created"):
    """An A/B test was set up; ``metrics`` holds any seed figures given per variant."""

    name: str
    variant_a: str
    variant_b: str
    split_ratio: float
    sticky_key: str | None = None
    metrics: dict[str, dict[str, float]] = {}
    ts: float


class ABVariantAssigned(Event, frozen=True, kw_only=True, tag="ab.variant_assigned"):
    """A request (or a caller) was assigned a variant with the given probability."""

    test: str
    variant: str
    provider: str
    probability: float
    request_id: str | None = None
    sticky: bool = False
    ts: float


class ABMetricsRecorded(Event, frozen=True, kw_only=True, tag="ab.metrics_recorded"):
    """An outcome counted in an A/B test: ``source`` is ``auto`` (routed) or ``manual``."""

    test: str
    variant: str
    latency_ms: float
    cost: float | None = None
    error: bool = False
    request_id: str | None = None
    source: str = "manual"
    ts: float


class ConfigurationApplied(Event, frozen=True, kw_only=True, tag="config.applied"):
    """A configuration took effect; ``summary`` is the configuration without secrets."""

    config_version: int
    """Which configuration this is in the log's sequence of configurations (unlike
    ``route.decided``'s field of the same stored name, which counts routing changes)."""
    digest: str
    providers: list[str]
    strategy: str
    summary: dict[str, Any] = {}
    ts: float


class RuntimeChangesDropped(Event, frozen=True, kw_only=True, tag="config.changes_dropped"):
    """A runtime started with a configuration other than the one last recorded: the run-time
    changes made under the earlier one do not carry over, and this lists them."""

    previous_digest: str
    digest: str
    priorities: dict[str, int] = {}
    limits: dict[str, int] = {}
    pools: list[str] = []
    ab_tests: list[str] = []
    ts: float


class EventsDropped(Event, frozen=True, kw_only=True, tag="log.events_dropped"):
    """The store failed long enough that the writer's buffer overflowed: an explicit gap."""

    count: int
    first_ts: float
    last_ts: float
    reason: str = ""
    ts: float


class DaemonHeartbeat(Event, frozen=True, kw_only=True, tag="daemon.heartbeat"):
    """A runtime sharing its log with others is alive, and holds these capacity leases.

    Written only once a runtime has seen another runtime's events in its log (a runtime alone
    writes none). ``daemon`` names the runtime (ordered by start time: the smallest live one
    leads); ``claims`` is, per provider, the most slots it may use until ``ttl_s`` after
    this heartbeat (its granted share, or its requests in flight if more). ``stopping``: it
    is closing, and its leases are free at once.
    """

    daemon: str
    ttl_s: float
    claims: dict[str, int] = {}
    stopping: bool = False
    ts: float


AnyEvent = (
    RequestReceived
    | RequestRejected
    | RouteDecided
    | AttemptStarted
    | AttemptSucceeded
    | AttemptFailed
    | FallbackSucceeded
    | FallbackExhausted
    | RequestCompleted
    | RequestFailed
    | BudgetLimitReached
    | BudgetReset
    | CircuitStateChanged
    | ProviderUnhealthy
    | ProviderRecovered
    | ProviderFailed
    | HealthProbed
    | ProviderRateLimited
    | ConcurrencyLimitChanged
    | PriorityChanged
    | ProviderRestarted
    | ProviderDisabled
    | PoolCreated
    | ABTestCreated
    | ABVariantAssigned
    | ABMetricsRecorded
    | ConfigurationApplied
    | RuntimeChangesDropped
    | EventsDropped
    | DaemonHeartbeat
)

EVENT_TYPES: dict[str, type[Event]] = {
    str(cls.__struct_config__.tag): cls for cls in AnyEvent.__args__
}
"""Every known wire tag and its class."""

UPCASTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""Old wire tag -> function turning its decoded dict into a current event's dict (with
``type``). Empty so far: no breaking change has been made."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)
_tag_decoder = msgspec.json.Decoder(dict[str, Any])


def event_tag(event: Event) -> str:
    """Return the wire tag of ``event``."""
    # msgspec types a tag as str | int | None; every event sets a dotted str tag (tested).
    return event.__struct_config__.tag  # type: ignore[return-value]


def encode_event(event: Event) -> bytes:
    """Encode an event to its JSON wire form (the tag is in the ``type`` field)."""
    return _encoder.encode(event)


def decode_event(data: bytes | str, *, position: int | None = None) -> AnyEvent:
    """Decode one stored event.

    Raises:
        UnknownEventType: the tag is not known to this version (and has no upcaster).
        StoreCorrupted: the data is not a valid event.
    """
    try:
        event: AnyEvent = _decoder.decode(data)
        return event
    except msgspec.ValidationError as exc:
        try:
            raw = _tag_decoder.decode(data)
        except msgspec.DecodeError:
            raise StoreCorrupted(
                f"stored event at position {position} is not valid JSON: {exc}",
                position=position,
            ) from exc
        tag = raw.get("type")
        if isinstance(tag, str) and tag in UPCASTERS:
            upcast: AnyEvent = msgspec.convert(UPCASTERS[tag](raw), AnyEvent)
            return upcast
        if isinstance(tag, str) and tag not in EVENT_TYPES:
            raise UnknownEventType(tag, position=position) from exc
        raise StoreCorrupted(
            f"stored event at position {position} is malformed: {exc}", position=position
        ) from exc
    except msgspec.DecodeError as exc:
        raise StoreCorrupted(
            f"stored event at position {position} is not valid JSON: {exc}", position=position
        ) from exc
