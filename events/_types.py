"""Value types: requests, responses, routing results and the figures projections report.

All are msgspec Structs: cheap to build, immutable where they travel between actors, and
encodable without adapters. Options are keyword-only.
"""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

__all__ = [
    "CAPABILITIES",
    "ABAssignment",
    "ABVariantResult",
    "ContentPart",
    "CostEstimate",
    "HealthCheckResult",
    "ImagePart",
    "Message",
    "ProviderHealth",
    "ProviderMetrics",
    "Request",
    "Requirements",
    "Response",
    "RouteResult",
    "StreamChunk",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "UsageReport",
    "new_request_id",
]

CAPABILITIES = frozenset({"streaming", "tools", "vision", "audio", "json"})
"""Capabilities a model may declare and a request may require."""

Role = Literal["system", "user", "assistant", "tool"]


def new_request_id() -> str:
    """Return a fresh, unique request id."""
    return uuid.uuid4().hex


class TextPart(msgspec.Struct, frozen=True, tag="text", tag_field="type", omit_defaults=True):
    """A piece of text inside a message.

    ``cache_control`` marks an Anthropic prompt-cache breakpoint after this part, sent
    verbatim (``{"type": "ephemeral"}``, optionally with ``"ttl": "1h"``); a system message's
    marked part keeps it in the system prompt. OpenAI caches prompts by itself and gets no
    marker.
    """

    text: str
    cache_control: dict[str, str] | None = None


class ImagePart(msgspec.Struct, frozen=True, tag="image", tag_field="type", kw_only=True):
    """An image inside a message: a URL, or base64 ``data`` with its ``media_type``."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None


ContentPart = TextPart | ImagePart


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A function call the model asked for; ``arguments`` is the JSON text it produced."""

    id: str
    name: str
    arguments: str = "{}"


class ToolCallDelta(msgspec.Struct, frozen=True, kw_only=True):
    """A fragment of a tool call in a stream; fragments with one ``index`` join up."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """A function the model may call; ``parameters`` is its JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, object] = msgspec.field(default_factory=dict)
    cache_control: dict[str, str] | None = None
    """An Anthropic prompt-cache breakpoint after this tool definition (see ``TextPart``)."""


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One chat message."""

    role: Role
    content: str | list[ContentPart] = ""
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        """Return the message's text, joining text parts."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def has_image(self) -> bool:
        """Return whether the message carries an image."""
        return not isinstance(self.content, str) and any(
            isinstance(p, ImagePart) for p in self.content
        )


class Request(msgspec.Struct, frozen=True, kw_only=True):
    """A chat completion request, independent of any provider's wire format.

    ``deadline`` is the total time in seconds the request may take, all attempts included,
    counted from when routeledger receives it. ``request_id`` is generated when not given.
    ``priority`` orders the requests waiting for capacity: a higher number is served first
    (then arrival order), and a full queue refuses the lowest first.
    """

    model: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, object] | None = None
    stream: bool = False
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    request_id: str = msgspec.field(default_factory=new_request_id)
    deadline: float | None = None
    reasoning_effort: str | None = None
    """Sent as OpenAI ``reasoning_effort`` (``minimal``, ``low``, ``medium``, ``high``) when
    set; for Anthropic it becomes an extended-thinking budget (see
    ``routeledger.actors.wire.THINKING_BUDGETS``)."""
    response_format: dict[str, object] | None = None
    """OpenAI ``response_format`` (``{"type": "json_object"}``, a ``json_schema``), passed
    through; the Anthropic messages API has no such field, so it is refused there."""
    seed: int | None = None
    """OpenAI ``seed``, passed through (Anthropic has none: it is left out)."""
    extra_body: dict[str, object] | None = None
    """Fields merged into the wire body last, after everything routeledger sets: they can
    override any of it (the model id included). Must be JSON-encodable."""
    priority: int = 0
    session_id: str | None = None
    """Requests with one session go to the same provider while it is healthy and has room."""

    def needed_capabilities(self) -> frozenset[str]:
        """Return the capabilities a model must have to serve this request."""
        caps = set()
        if self.stream:
            caps.add("streaming")
        if self.tools:
            caps.add("tools")
        if any(m.has_image() for m in self.messages):
            caps.add("vision")
        return frozenset(caps)

    def estimated_input_tokens(self) -> int:
        """Estimate the prompt's tokens (about four characters a token, rounded up)."""
        chars = sum(len(m.text()) + 4 for m in self.messages)
        if self.tools:
            chars += sum(len(t.name) + len(t.description) + 64 for t in self.tools)
        return max(1, (chars + 3) // 4)


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens an answer consumed.

    ``input_tokens`` is the whole prompt, cached reads and cache writes included (for both
    formats: Anthropic's own ``input_tokens`` excludes them, so they are added);
    ``cached_input_tokens`` and ``cache_write_tokens`` are the parts of it read from and
    written to the prompt cache. ``output_tokens`` is the whole completion, hidden
    ``reasoning_tokens`` included.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Return input plus output tokens."""
        return self.input_tokens + self.output_tokens


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """A completed answer. ``cost`` is ``None`` when the model has no price.

    ``model`` is the configured model name that served the request (what usage is keyed
    by); ``upstream_model`` is the id the provider reported, when it said one.
    ``refusal`` is the model's refusal text (then ``finish_reason`` is ``"refusal"``).
    """

    content: str
    provider: str
    model: str
    request_id: str
    usage: Usage | None = None
    cost: float | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    latency_ms: float = 0.0
    attempts: int = 1
    cached: bool = False
    refusal: str | None = None
    upstream_model: str | None = None


class StreamChunk(msgspec.Struct, frozen=True, kw_only=True):
    """One increment of a streamed answer.

    The last chunk of a stream has ``finish_reason`` set and, when the provider reported it,
    ``usage``; ``cost`` is filled in by the runtime on that chunk. ``model`` is the id the
    provider reported. ``refusal`` is a piece of the model's refusal text.
    """

    delta: str = ""
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    cost: float | None = None
    provider: str | None = None
    model: str | None = None
    refusal: str | None = None


class CostEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """The estimated cost of a request on one provider; ``cost`` is ``None`` when unpriced."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float | None


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """Constraints and preferences for routing one request."""

    model: str | None = None
    max_cost: float | None = None
    max_latency_ms: float | None = None
    require_capabilities: frozenset[str] = frozenset()
    preferred_providers: list[str] = msgspec.field(default_factory=list)
    exclude_providers: list[str] = msgspec.field(default_factory=list)
    pool: str | None = None


class RouteResult(msgspec.Struct, frozen=True, kw_only=True):
    """A routing decision: the chosen provider, why, how sure, and the ranked alternatives."""

    provider: str
    model: str
    reason: str
    confidence: float
    alternatives: list[str] = msgspec.field(default_factory=list)
    scores: dict[str, float] = msgspec.field(default_factory=dict)
    excluded: dict[str, str] = msgspec.field(default_factory=dict)
    strategy: str = ""
    request_id: str = ""


class ProviderHealth(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's health as the health actor sees it.

    ``state`` is ``closed`` (healthy), ``open`` (cooling down), ``half_open`` (probing) or
    ``disabled`` (restarts exhausted or failed permanently).
    """

    provider: str
    healthy: bool
    state: str
    consecutive_failures: int = 0
    error_rate: float = 0.0
    calls_in_window: int = 0
    trips: int = 0
    open_until: float | None = None
    last_error: str | None = None


class HealthCheckResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one active probe."""

    provider: str
    healthy: bool
    latency_ms: float
    error: str | None = None


class ABAssignment(msgspec.Struct, frozen=True, kw_only=True):
    """Which variant of an A/B test a request goes to, and with what probability."""

    test: str
    variant: Literal["A", "B"]
    provider: str
    probability: float
    request_id: str | None = None


class ProviderMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Per-provider figures folded from attempt events."""

    provider: str
    requests: int = 0
    successes: int = 0
    failures: int = 0
    cancelled: int = 0
    """Streams the caller closed early: attempts, but not failures of the provider."""
    error_rate: float = 0.0
    latency_mean_ms: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    unpriced_requests: int = 0
    last_used: float | None = None


class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Usage over one period (``hour``, ``day``, ``week``, ``month`` or ``all``).

    ``start`` is the period's start in Unix seconds (UTC); ``None`` for ``all``.
    """

    period: str
    start: float | None = None
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    by_model: dict[str, Usage] = msgspec.field(default_factory=dict)
    """Keyed by the configured model name (never the provider's own id)."""
    cached_input_tokens: int = 0
    """Parts of ``input_tokens`` read from, and written to, the prompt cache, and the
    reasoning part of ``output_tokens`` (see :class:`Usage`)."""
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Return input plus output tokens."""
        return self.input_tokens + self.output_tokens


class ABVariantResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcomes of one variant of an A/B test."""

    variant: str
    provider: str
    requests: int = 0
    errors: int = 0
    mean_latency_ms: float = 0.0
    mean_cost: float = 0.0
    error_rate: float = 0.0
