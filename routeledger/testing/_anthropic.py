"""The Anthropic messages API, server side: answers, event streams and error bodies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from routeledger.testing._behaviour import ERROR_CODES
from routeledger.testing._format import ENCODER, StreamParts, validate_common
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
        self, n: int, model: str, text: str, input_tokens: int, output_tokens: int
    ) -> dict[str, Any]:
        """Return a ``message`` object."""
        return {
            "id": _id(n),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def stream(
        self,
        n: int,
        model: str,
        texts: list[str],
        input_tokens: int,
        output_tokens: int,
        parsed: dict[str, Any],
    ) -> StreamParts:
        """Return the events of a stream, from ``message_start`` to ``message_stop``."""
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
        pre = (
            _sse(b"message_start", {"type": "message_start", "message": message})
            + _sse(
                b"content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            + _sse(b"ping", {"type": "ping"})
        )
        chunks = [
            _sse(
                b"content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": t},
                },
            )
            for t in texts
        ]
        post = (
            _sse(b"content_block_stop", {"type": "content_block_stop", "index": 0})
            + _sse(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            )
            + _sse(b"message_stop", {"type": "message_stop"})
        )
        error = _sse(
            b"error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        return pre, chunks, post, error


ANTHROPIC = AnthropicFormat()
