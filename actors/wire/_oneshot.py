"""A whole answer as a stream's one chunk (a server that ignores ``"stream": true``)."""

from __future__ import annotations

from routeledger.events import Response, StreamChunk, ToolCallDelta

__all__ = ["last_chunk"]


def last_chunk(response: Response) -> StreamChunk:
    """Return the one, last chunk a stream of ``response`` amounts to.

    It carries the text, the tool calls (one whole delta each), the refusal, the finish
    reason, usage and cost, so that folding it gives ``response`` back.
    """
    tool_calls = [
        ToolCallDelta(index=i, id=tc.id, name=tc.name, arguments=tc.arguments)
        for i, tc in enumerate(response.tool_calls)
    ]
    return StreamChunk(
        delta=response.content,
        tool_calls=tool_calls or None,
        # A JSON answer always ended: one that named no reason stopped normally.
        finish_reason=response.finish_reason or "stop",
        usage=response.usage,
        cost=response.cost,
        provider=response.provider,
        model=response.upstream_model or response.model,
        refusal=response.refusal,
    )
