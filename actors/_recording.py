"""What happened, as events: pure functions from outcomes and transitions to log events.

The router calls them for the supervisor actor and for the simulation alike, so a live
runtime and a simulated one record the same facts the same way. Nothing here reads state or
the clock: every time stamp is passed in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from routeledger.actors._circuit import CLOSED, OPEN, Transition, counts_against_health
from routeledger.events import (
    AttemptFailed,
    AttemptSucceeded,
    CircuitStateChanged,
    Event,
    FallbackExhausted,
    FallbackSucceeded,
    ProviderFailed,
    ProviderRecovered,
    ProviderUnhealthy,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RequestRejected,
    RoutingError,
)

if TYPE_CHECKING:
    from routeledger.actors._messages import Outcome, RequestEnded, RouteQuery
    from routeledger.events import Usage

__all__ = [
    "attempt_event",
    "request_ended_events",
    "request_received",
    "request_rejected",
    "transition_events",
]


def request_received(query: RouteQuery, *, ts: float, include_text: bool) -> RequestReceived:
    """Return the event of a request's arrival (the prompt only when ``include_text``)."""
    r = query.request
    return RequestReceived(
        ts=ts,
        request_id=r.request_id,
        model=r.model,
        stream=r.stream,
        messages=len(r.messages),
        estimated_input_tokens=r.estimated_input_tokens(),
        max_tokens=r.max_tokens,
        capabilities=sorted(r.needed_capabilities()),
        metadata=dict(r.metadata),
        deadline_s=r.deadline,
        session_id=r.session_id,
        preferred_provider=query.preferred_provider,
        pool=query.pool,
        ab_test=query.ab_test,
        prompt="\n".join(m.text() for m in r.messages) if include_text else None,
    )


def request_rejected(request_id: str, error: Exception, *, ts: float) -> RequestRejected:
    """Return the event of a request refused before any provider was tried."""
    return RequestRejected(
        ts=ts, request_id=request_id, error=type(error).__name__, message=str(error)
    )


def _cache_counts(usage: Usage | None) -> dict[str, int]:
    """Return the cache and reasoning counts of ``usage`` an event carries."""
    if usage is None:
        return {}
    return {
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def attempt_event(outcome: Outcome, *, ts: float) -> Event:
    """Return the event of one attempt's end: succeeded or failed."""
    if outcome.error is None:
        usage = outcome.usage
        return AttemptSucceeded(
            ts=ts,
            request_id=outcome.request_id,
            attempt=outcome.attempt,
            provider=outcome.provider,
            model=outcome.model,
            latency_ms=outcome.latency_ms,
            ttft_ms=outcome.ttft_ms,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost=outcome.cost,
            stream=outcome.stream,
            **_cache_counts(usage),
        )
    err = outcome.error
    return AttemptFailed(
        ts=ts,
        request_id=outcome.request_id,
        attempt=outcome.attempt,
        provider=outcome.provider,
        model=outcome.model,
        error=type(err).__name__,
        message=err.message[:500],
        status=err.status,
        retry_after_s=err.retry_after_s,
        retryable=err.retryable,
        maybe_billed=err.maybe_billed,
        latency_ms=outcome.latency_ms,
        counts_against_health=counts_against_health(err),
    )


def request_ended_events(
    query: RouteQuery, ended: RequestEnded, *, ts: float, include_text: bool
) -> list[Event]:
    """Return the events of a whole request's end: completed (maybe by a fallback) or failed."""
    request = query.request
    events: list[Event] = []
    resp = ended.response
    if resp is not None:
        if ended.attempts > 1 and ended.failed_providers:
            events.append(
                FallbackSucceeded(
                    ts=ts,
                    request_id=request.request_id,
                    provider=resp.provider,
                    attempts=ended.attempts,
                    failed_providers=list(ended.failed_providers),
                )
            )
        usage = resp.usage
        events.append(
            RequestCompleted(
                ts=ts,
                request_id=request.request_id,
                provider=resp.provider,
                model=resp.model,
                attempts=ended.attempts,
                latency_ms=ended.latency_ms,
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                cost=resp.cost,
                finish_reason=resp.finish_reason,
                stream=request.stream,
                cached=resp.cached,
                response_text=resp.content if include_text else None,
                **_cache_counts(usage),
            )
        )
        return events
    err = ended.error
    # Only routing giving up exhausts the fallbacks: an error that forbids failover (a bad
    # request, a stream broken after its first chunk) never tried any.
    if ended.attempts > 0 and ended.failed_providers and isinstance(err, RoutingError):
        events.append(
            FallbackExhausted(
                ts=ts,
                request_id=request.request_id,
                attempts=ended.attempts,
                providers=list(ended.failed_providers),
                last_error=type(err).__name__ if err else "",
            )
        )
    events.append(
        RequestFailed(
            ts=ts,
            request_id=request.request_id,
            model=request.model,
            error=type(err).__name__ if err else "Unknown",
            message=str(err)[:500] if err else "",
            attempts=ended.attempts,
            latency_ms=ended.latency_ms,
            provider=ended.failed_providers[-1] if ended.failed_providers else None,
            stream=request.stream,
        )
    )
    return events


def transition_events(
    provider: str, transition: Transition, *, ts: float
) -> tuple[list[Event], list[str]]:
    """Return the events of one circuit transition and the callbacks it fires.

    A transition's ``prior`` step is not included: the caller records it first.
    """
    events: list[Event] = [
        CircuitStateChanged(
            ts=ts,
            provider=provider,
            from_state=transition.from_state,
            to_state=transition.to_state,
            reason=transition.reason,
            open_until=transition.open_until,
            trips=transition.trips,
        )
    ]
    fired: list[str] = []
    if transition.from_state == CLOSED and transition.to_state == OPEN:
        events.append(
            ProviderUnhealthy(
                ts=ts, provider=provider, reason=transition.reason, evidence=transition.evidence
            )
        )
        fired.append("provider_unhealthy")
    elif transition.to_state == CLOSED:
        events.append(
            ProviderRecovered(
                ts=ts,
                provider=provider,
                reason=transition.reason,
                unhealthy_for_s=transition.unhealthy_for_s,
            )
        )
        fired.append("provider_recovered")
    if transition.failed:
        events.append(
            ProviderFailed(
                ts=ts,
                provider=provider,
                reason=f"circuit tripped {transition.trips} times without recovering",
                evidence=transition.evidence,
            )
        )
        fired.append("provider_failed")
    return events, fired
