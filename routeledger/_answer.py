"""Folding a stream's chunks into the :class:`Response` it amounts to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from routeledger.events import Response, ToolCall

if TYPE_CHECKING:
    from routeledger.events import ModelSpec, StreamChunk, Usage

__all__ = ["StreamedAnswer"]


class StreamedAnswer:
    """What the chunks of one stream have said so far: text, tool calls, refusal, usage, cost.

    The answer's ``model`` is the configured model name (as for a completion, so that usage is
    keyed alike); the id the chunks report becomes ``upstream_model``.
    """

    __slots__ = (
        "_model_spec",
        "_parts",
        "_refusal",
        "_tools",
        "cost",
        "finish_reason",
        "model",
        "upstream_model",
        "usage",
    )

    def __init__(self, model: ModelSpec) -> None:
        self._model_spec = model
        self._parts: list[str] = []
        # index -> [id, name, arguments so far]; fragments of one call share an index
        self._tools: dict[int, list[str]] = {}
        self.model = model.name
        self.upstream_model: str | None = None
        self._refusal: list[str] = []
        self.usage: Usage | None = None
        self.cost: float | None = None
        self.finish_reason: str | None = None

    def add(self, chunk: StreamChunk) -> None:
        """Fold one chunk in."""
        if chunk.delta:
            self._parts.append(chunk.delta)
        if chunk.refusal:
            self._refusal.append(chunk.refusal)
        for tc in chunk.tool_calls or ():
            slot = self._tools.setdefault(tc.index, ["", "", ""])
            slot[0] = slot[0] or (tc.id or "")
            slot[1] = slot[1] or (tc.name or "")
            slot[2] += tc.arguments
        if chunk.usage is not None:
            self.usage = chunk.usage
            self.cost = chunk.cost if chunk.cost is not None else self._model_spec.cost(chunk.usage)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.model:
            self.upstream_model = chunk.model

    def response(
        self, *, provider: str, request_id: str, latency_ms: float, attempts: int
    ) -> Response:
        """Return the whole answer as a :class:`Response`."""
        content = "".join(self._parts)
        refusal = "".join(self._refusal) or None
        if refusal is None and self.finish_reason == "refusal":
            refusal = content or "refused"  # Anthropic: what the model said is the refusal
        return Response(
            content=content,
            provider=provider,
            model=self.model,
            upstream_model=self.upstream_model,
            request_id=request_id,
            usage=self.usage,
            cost=self.cost,
            finish_reason=self.finish_reason,
            tool_calls=[
                ToolCall(id=v[0], name=v[1], arguments=v[2] or "{}")
                for _, v in sorted(self._tools.items())
            ],
            latency_ms=latency_ms,
            attempts=attempts,
            refusal=refusal,
        )
