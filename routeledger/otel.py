"""OpenTelemetry traces of a runtime's requests, after the GenAI semantic conventions.

Needs the ``otel`` extra (``pip install 'routeledger[otel]'``, the ``opentelemetry-api``
package only: the application brings the SDK and its exporters). ``import routeledger`` never
imports this module nor ``opentelemetry``. Turn it on once::

    rt.instrument_tracing()                        # or routeledger.otel.instrument(rt)

Each request (``complete``, ``acomplete``, ``stream``, ``astream``) is one span named
``chat {model}`` (kind ``CLIENT``), a child of the caller's current span when the request
started, with one child span per attempt. A stream's span ends when the stream ends or the
caller closes it. Attributes (GenAI conventions 1.37, plus a ``routeledger.`` namespace):

=========================================== ======== ======== ==================================
attribute                                   request  attempt  value
=========================================== ======== ======== ==================================
gen_ai.operation.name                       yes      yes      ``chat``
gen_ai.provider.name, gen_ai.system         yes      yes      ``openai`` or ``anthropic`` (kind)
gen_ai.request.model                        yes      yes      asked; attempt: the id sent [2]
gen_ai.request.max_tokens, .temperature,    yes               when the request sets them
.top_p, .stop_sequences
gen_ai.response.model, .finish_reasons      yes      yes      as the provider answered
gen_ai.usage.input_tokens, .output_tokens   yes      yes      as the provider reported
gen_ai.response.time_to_first_chunk                  yes      streams, seconds [1]
server.address, server.port                          yes      from the provider's ``base_url``
error.type                                  yes      yes      the error's class name
http.response.status_code                            yes      of a failed attempt, when known
routeledger.request_id, .stream             yes
routeledger.preferred_provider, .pool,      yes               when the call names them
.ab_test
routeledger.provider                        yes      yes      routeledger's name of the provider
routeledger.attempts, .failed_providers     yes               attempts made, providers failed
routeledger.cost                            yes      yes      when the model is priced
routeledger.cancelled                       yes      yes      the caller closed the stream
routeledger.attempt                                  yes      1, 2, ...
routeledger.model                                    yes      routeledger's model name
routeledger.route.strategy, .reason,                 yes      the routing decision
.confidence, .alternatives; routeledger.probe
=========================================== ======== ======== ==================================

[1] Newer than 1.37 (as later GenAI instrumentations name it); the rest is in 1.37.
[2] A request span names the model the caller asked for (a routeledger model name); an
attempt span names the provider's model id (``ModelSpec.upstream``, else the name) and has
routeledger's name as ``routeledger.model``. So an attempt span is named ``chat {that id}``.

Span events on the request span: ``routeledger.backoff`` (every candidate was waiting out a
backoff or Retry-After: ``routeledger.provider``, ``routeledger.wait_s``) and
``routeledger.saturated`` (every candidate's concurrency budget was full: the request queues).

``gen_ai.system`` is the attribute's name before conventions 1.37 renamed it
``gen_ai.provider.name``; both are set, so older backends read it too. Summed over attempt
spans, tokens and cost equal ``get_metrics()`` (which counts successful attempts); the request
span repeats the served attempt's figures, so sum one level, not both. A cancelled stream is
not an error (its span's status stays unset, ``routeledger.cancelled`` is true), as in the
metrics. A response served from the response cache makes no span, nor does a stream that is
never iterated.

Prompt and completion text are never recorded unless ``capture_content=True``: then the
request span gets ``gen_ai.input.messages`` and ``gen_ai.output.messages`` (JSON strings in
the conventions' message schema). Error messages (already free of keys) are span statuses.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from routeledger.actors._messages import Backoff, Decision
from routeledger.events import Response, StreamCancelled

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from routeledger._runtime import Runtime
    from routeledger.actors._failover import Record
    from routeledger.actors._messages import Outcome, RequestEnded, RouteQuery
    from routeledger.events import Message, ProviderConfig, Usage

__all__ = ["SCHEMA_URL", "RequestTracer", "instrument", "uninstrument"]

log = logging.getLogger("routeledger")

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""The semantic conventions the attribute names follow."""

OPERATION = "chat"

_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic"}
"""``ProviderConfig.kind`` -> ``gen_ai.provider.name`` (the wire format's vendor)."""

Attributes = dict[str, "AttributeValue"]


class _Provider:
    """What the spans say of one configured provider, computed once."""

    __slots__ = ("attributes", "gen_ai_name")

    def __init__(self, config: ProviderConfig) -> None:
        self.gen_ai_name = _PROVIDER_NAMES.get(config.kind, config.kind)
        url = urlsplit(config.base_url)
        self.attributes: Attributes = {
            "gen_ai.provider.name": self.gen_ai_name,
            "gen_ai.system": self.gen_ai_name,
        }
        if url.hostname:
            self.attributes["server.address"] = url.hostname
            self.attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)


class RequestTracer:
    """Makes the spans of a runtime's requests (the interpreter's request observer).

    Args:
        providers: The runtime's providers.
        tracer_provider: Where spans go (default: the global one, read when a span starts,
            so one set later is used too).
        capture_content: Record prompt and completion text (off by default).
    """

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        *,
        tracer_provider: TracerProvider | None = None,
        capture_content: bool = False,
    ) -> None:
        from routeledger import __version__

        self.tracer = trace.get_tracer(
            "routeledger", __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        self.capture_content = capture_content
        self.providers = {p.name: _Provider(p) for p in providers}
        kinds = {p.gen_ai_name for p in self.providers.values()}
        # Required on every span: a request that never reached a provider names the only
        # kind configured, when there is one.
        self.default_provider_name = kinds.pop() if len(kinds) == 1 else None

    def request_started(self, query: RouteQuery) -> _RequestSpans | None:
        """Start the request's span, a child of the current one (called on the caller's thread)."""
        try:
            return _RequestSpans(self, query)
        except Exception:
            log.exception("starting a request's trace span failed")
            return None


class _RequestSpans:
    """The spans of one request: the request's, and the open attempt's.

    The caller's context and the start time are taken when the request starts; the request's
    span is made (with that parent and start time) when the policy first acts, so a stream
    that is never iterated leaves no span open.
    """

    __slots__ = ("_attempt", "_context", "_parent", "_query", "_span", "_started_ns", "_tracer")

    def __init__(self, tracer: RequestTracer, query: RouteQuery) -> None:
        self._tracer = tracer
        self._query = query
        self._context = otel_context.get_current()
        self._started_ns = time.time_ns()
        self._span: Span | None = None
        self._parent: Context | None = None
        self._attempt: Span | None = None

    def _request_span(self) -> Span:
        if self._span is not None:
            return self._span
        tracer = self._tracer
        query = self._query
        request = query.request
        attributes: Attributes = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.request.model": request.model,
            "routeledger.request_id": request.request_id,
            "routeledger.stream": request.stream,
        }
        if tracer.default_provider_name is not None:
            attributes["gen_ai.provider.name"] = tracer.default_provider_name
            attributes["gen_ai.system"] = tracer.default_provider_name
        for key, value in (
            ("gen_ai.request.max_tokens", request.max_tokens),
            ("gen_ai.request.temperature", request.temperature),
            ("gen_ai.request.top_p", request.top_p),
            ("gen_ai.request.stop_sequences", request.stop),
            ("routeledger.preferred_provider", query.preferred_provider),
            ("routeledger.pool", query.pool),
            ("routeledger.ab_test", query.ab_test),
        ):
            if value is not None:
                attributes[key] = value
        if tracer.capture_content:
            attributes["gen_ai.input.messages"] = _input_messages(request.messages)
        self._span = span = tracer.tracer.start_span(
            f"{OPERATION} {request.model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=self._started_ns,
        )
        self._parent = trace.set_span_in_context(span)
        return span

    def chose(self, answer: Any) -> None:
        """Start an attempt's span (a decision), or note a wait on the request's span."""
        try:
            span = self._request_span()
            if isinstance(answer, Decision):
                self._start_attempt(answer)
            elif isinstance(answer, Backoff):
                span.add_event(
                    "routeledger.backoff",
                    {"routeledger.provider": answer.provider, "routeledger.wait_s": answer.seconds},
                )
            elif answer is None:
                span.add_event("routeledger.saturated")
        except Exception:
            log.exception("tracing a routing decision failed")

    def recorded(self, record: Record) -> None:
        """End the attempt's span (an outcome) and the request's (its end)."""
        try:
            response = record.ended.response if record.ended is not None else None
            if record.outcome is not None:
                self._end_attempt(record.outcome, response)
            if record.ended is not None:
                self._end_request(record.ended)
        except Exception:
            log.exception("tracing a request's end failed")

    def _start_attempt(self, decision: Decision) -> None:
        route = decision.route
        # The id sent on the wire (the convention's exact model requested), and ours.
        wire_model = decision.model.wire_name
        attributes: Attributes = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.request.model": wire_model,
            "routeledger.model": decision.model.name,
            "routeledger.provider": route.provider,
            "routeledger.attempt": decision.attempt,
            "routeledger.route.strategy": route.strategy,
            "routeledger.route.reason": route.reason,
            "routeledger.route.confidence": route.confidence,
            "routeledger.route.alternatives": list(route.alternatives),
        }
        provider = self._tracer.providers.get(route.provider)
        if provider is not None:
            attributes.update(provider.attributes)
        if decision.probe:
            attributes["routeledger.probe"] = True
        self._attempt = self._tracer.tracer.start_span(
            f"{OPERATION} {wire_model}",
            context=self._parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    def _end_attempt(self, outcome: Outcome, response: Response | None) -> None:
        span, self._attempt = self._attempt, None
        if span is None:
            return
        _set_usage(span, outcome.usage, outcome.cost)
        if outcome.ttft_ms is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", outcome.ttft_ms / 1000.0)
        if response is not None:
            _set_response(span, response)
        error = outcome.error
        if isinstance(error, StreamCancelled):
            span.set_attribute("routeledger.cancelled", True)
        elif error is not None:
            if error.status is not None:
                span.set_attribute("http.response.status_code", error.status)
            _set_error(span, error)
        span.end()

    def _end_request(self, ended: RequestEnded) -> None:
        span = self._request_span()
        span.set_attribute("routeledger.attempts", ended.attempts)
        if ended.failed_providers:
            span.set_attribute("routeledger.failed_providers", list(ended.failed_providers))
        response = ended.response
        error = ended.error
        # The provider that served it, else the last one that failed.
        provider_name = response.provider if response is not None else None
        if provider_name is None and ended.failed_providers:
            provider_name = ended.failed_providers[-1]
        if provider_name is None and error is not None:
            provider_name = getattr(error, "provider", None)
        provider = self._tracer.providers.get(provider_name or "")
        if provider is not None:
            span.set_attribute("gen_ai.provider.name", provider.gen_ai_name)
            span.set_attribute("gen_ai.system", provider.gen_ai_name)
            span.set_attribute("routeledger.provider", provider_name or "")
        if response is not None:
            _set_response(span, response)
            _set_usage(span, response.usage, response.cost)
            if self._tracer.capture_content:
                span.set_attribute("gen_ai.output.messages", _output_messages(response))
        if isinstance(error, StreamCancelled):
            span.set_attribute("routeledger.cancelled", True)
        elif error is not None:
            _set_error(span, error)
        span.end()


def _set_usage(span: Span, usage: Usage | None, cost: float | None) -> None:
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    if cost is not None:
        span.set_attribute("routeledger.cost", cost)


def _set_response(span: Span, response: Response) -> None:
    span.set_attribute("gen_ai.response.model", response.upstream_model or response.model)
    if response.finish_reason is not None:
        span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])


def _set_error(span: Span, error: BaseException) -> None:
    span.set_attribute("error.type", type(error).__name__)
    message = getattr(error, "message", None)
    span.set_status(Status(StatusCode.ERROR, message if isinstance(message, str) else None))


def _input_messages(messages: list[Message]) -> str:
    """Return the conventions' ``gen_ai.input.messages`` (text and tool parts) as JSON."""
    out: list[dict[str, Any]] = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        if message.role == "tool":
            answer = message.text()
            parts.append(
                {"type": "tool_call_response", "id": message.tool_call_id, "response": answer}
            )
        elif message.text():
            parts.append({"type": "text", "content": message.text()})
        for call in message.tool_calls or ():
            parts.append(
                {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
            )
        out.append({"role": message.role, "parts": parts})
    return json.dumps(out, ensure_ascii=False)


def _output_messages(response: Response) -> str:
    """Return the conventions' ``gen_ai.output.messages`` of a response as JSON."""
    parts: list[dict[str, Any]] = []
    if response.content:
        parts.append({"type": "text", "content": response.content})
    for call in response.tool_calls:
        parts.append(
            {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        )
    message = {"role": "assistant", "parts": parts, "finish_reason": response.finish_reason}
    return json.dumps([message], ensure_ascii=False)


def instrument(
    runtime: Runtime,
    *,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool = False,
) -> RequestTracer:
    """Trace every request ``runtime`` serves from now on; return the tracer.

    Calling it again replaces the previous tracer (to change its options).

    Args:
        runtime: The runtime.
        tracer_provider: Where spans go (default: the global tracer provider).
        capture_content: Record prompt and completion text on the request spans.
    """
    tracer = RequestTracer(
        runtime.config.providers,
        tracer_provider=tracer_provider,
        capture_content=capture_content,
    )
    runtime._requests.observer = tracer
    return tracer


def uninstrument(runtime: Runtime) -> None:
    """Stop tracing ``runtime``'s requests (those under way finish their spans)."""
    runtime._requests.observer = None
