"""The Anthropic messages API, server side: answers, event streams and error bodies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from routeledger.testing._behaviour import ERROR_CODES
from routeledger.testing._format import (
    ENCODER,
    NO_EXTRAS,
    Extras,
    StreamParts,
    split_in_two,
    validate_common,
)
from routeledger.testing._http import reason

if TYPE_CHECKING:
    from routeledger.testing._behaviour import ErrorShape

__all__ = ["ANTHROPIC", "AnthropicFormat"]

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _sse(event: bytes, obj: Any) -> bytes:
    return b"event: " + event + b"\ndata: " + ENCODER.encode(obj) + b"\n\n"


def _id(n: int) -> str:
    return f"msg_01Fake{n:018x}"


_SEARCH_ID = "srvtoolu_01FakeSearch0000000000"
_SEARCH_QUERY = '{"query": "routeledger fake search"}'
_SEARCH_RESULT: dict[str, Any] = {
    "type": "web_search_tool_result",
    "tool_use_id": _SEARCH_ID,
    "content": [
        {
            "type": "web_search_result",
            "title": "A fake search result",
            "url": "https://example.invalid/result",
            "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5",
            "page_age": None,
        }
    ],
}
_THINKING = "Let me search for that."
_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"


def _usage(input_tokens: int, output_tokens: int, extras: Extras) -> dict[str, Any]:
    """Return a usage object; Anthropic counts cache reads and writes apart from input."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens + extras.reasoning_tokens,
        "cache_creation_input_tokens": extras.cache_write_tokens,
        "cache_read_input_tokens": extras.cached_input_tokens,
    }


def _tool_id(n: int) -> str:
    return f"toolu_01Fake{n:016x}"


def _stop_reason(extras: Extras) -> str:
    if extras.refusal is not None:
        return "refusal"
    return "tool_use" if extras.tool_call is not None else "end_turn"


def _block_events(index: int, block: dict[str, Any], deltas: list[dict[str, Any]]) -> bytes:
    out = _sse(
        b"content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )
    for delta in deltas:
        out += _sse(
            b"content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
        )
    return out + _sse(b"content_block_stop", {"type": "content_block_stop", "index": index})


class AnthropicFormat:
    """``POST /v1/messages``: JSON, or the ``message_start`` ... ``message_stop`` events."""

    name = "anthropic"
    request_id_header = b"request-id: "
    wrong_json_stream_end = b"event: message_stop\ndata: {}\n\n"

    def validate(self, body: bytes, parsed: Any) -> str | None:
        """Return why the request body is rejected (400), or None; max_tokens is required."""
        problem = validate_common(body, parsed)
        if problem is None and not isinstance(parsed.get("max_tokens"), int):
            return "max_tokens: Field required"
        return problem

    def error_status(self, shape: ErrorShape) -> int:
        """Return Anthropic's status for a known provider error."""
        return shape.anthropic_status

    def error_body(self, status: int, code: str | None, message: str | None, rid: str) -> bytes:
        """Encode an Anthropic ``{"type": "error", ...}`` body with its request id."""
        shape = ERROR_CODES.get(code) if code else None
        if shape is not None:
            etype, msg = shape.anthropic_type, shape.anthropic_message
        elif code and code.endswith("_error"):
            etype, msg = code, code.replace("_", " ")
        else:
            etype = _TYPE_BY_STATUS.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            msg = reason(status)
        return ENCODER.encode(
            {
                "type": "error",
                "error": {"type": etype, "message": message or msg},
                "request_id": rid,
            }
        )

    def completion(
        self,
        n: int,
        model: str,
        text: str,
        input_tokens: int,
        output_tokens: int,
        extras: Extras = NO_EXTRAS,
    ) -> dict[str, Any]:
        """Return a ``message`` object."""
        content: list[dict[str, Any]] = []
        if extras.server_tools:
            content.append({"type": "thinking", "thinking": _THINKING, "signature": _SIGNATURE})
            content.append(
                {
                    "type": "server_tool_use",
                    "id": _SEARCH_ID,
                    "name": "web_search",
                    "input": msgspec.json.decode(_SEARCH_QUERY),
                }
            )
            content.append(_SEARCH_RESULT)
        content.append({"type": "text", "text": extras.refusal or text})
        if extras.tool_call is not None and extras.refusal is None:
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(n),
                    "name": extras.tool_call,
                    "input": msgspec.json.decode(extras.tool_arguments),
                }
            )
        return {
            "id": _id(n),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _stop_reason(extras),
            "stop_sequence": None,
            "usage": _usage(input_tokens, output_tokens, extras),
        }

    def stream(
        self,
        n: int,
        model: str,
        texts: list[str],
        input_tokens: int,
        output_tokens: int,
        parsed: dict[str, Any],
        extras: Extras = NO_EXTRAS,
    ) -> StreamParts:
        """Return the events of a stream, from ``message_start`` to ``message_stop``.

        With ``server_tools`` a thinking block, a server tool use and its result come first;
        a tool call follows the text as a ``tool_use`` block with its input in two deltas.
        """
        message: dict[str, Any] = {
            "id": _id(n),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        if extras.counts:
            # Cache reads and writes are known when the message starts.
            message["usage"] = {**_usage(input_tokens, 0, extras), "output_tokens": 1}
        pre = _sse(b"message_start", {"type": "message_start", "message": message})
        text_index = 0
        if extras.server_tools:
            pre += _block_events(
                0,
                {"type": "thinking", "thinking": "", "signature": ""},
                [
                    {"type": "thinking_delta", "thinking": _THINKING},
                    {"type": "signature_delta", "signature": _SIGNATURE},
                ],
            )
            pre += _block_events(
                1,
                {"type": "server_tool_use", "id": _SEARCH_ID, "name": "web_search", "input": {}},
                [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in split_in_two(_SEARCH_QUERY)
                ],
            )
            pre += _block_events(2, _SEARCH_RESULT, [])
            text_index = 3
        pre += _sse(
            b"content_block_start",
            {
                "type": "content_block_start",
                "index": text_index,
                "content_block": {"type": "text", "text": ""},
            },
        ) + _sse(b"ping", {"type": "ping"})
        if extras.refusal is not None:
            texts = split_in_two(extras.refusal)
        chunks = [
            _sse(
                b"content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": text_index,
                    "delta": {"type": "text_delta", "text": t},
                },
            )
            for t in texts
        ]
        post = _sse(b"content_block_stop", {"type": "content_block_stop", "index": text_index})
        if extras.tool_call is not None and extras.refusal is None:
            post += _block_events(
                text_index + 1,
                {"type": "tool_use", "id": _tool_id(n), "name": extras.tool_call, "input": {}},
                [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in split_in_two(extras.tool_arguments)
                ],
            )
        post += _sse(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop_reason(extras), "stop_sequence": None},
                "usage": {"output_tokens": output_tokens + extras.reasoning_tokens},
            },
        ) + _sse(b"message_stop", {"type": "message_stop"})
        error = _sse(
            b"error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        return pre, chunks, post, error


ANTHROPIC = AnthropicFormat()
