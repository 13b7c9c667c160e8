"""The OpenAI chat completions API, server side: answers, streams and error bodies."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

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

__all__ = ["OPENAI", "OpenAIFormat"]

_BY_STATUS: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def _sse(obj: Any) -> bytes:
    return b"data: " + ENCODER.encode(obj) + b"\n\n"


def _id(n: int) -> str:
    return f"chatcmpl-fake{n:020x}"


def _usage(input_tokens: int, output_tokens: int, extras: Extras) -> dict[str, Any]:
    """Return a usage object; cache and reasoning counts add to the totals, as OpenAI's do."""
    prompt = input_tokens + extras.cached_input_tokens + extras.cache_write_tokens
    completion = output_tokens + extras.reasoning_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if extras.counts:
        usage["prompt_tokens_details"] = {
            "cached_tokens": extras.cached_input_tokens,
            "audio_tokens": 0,
        }
        usage["completion_tokens_details"] = {
            "reasoning_tokens": extras.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _call_id(n: int) -> str:
    return f"call_fake{n:012x}"


class OpenAIFormat:
    """``POST /v1/chat/completions``: JSON, or SSE ``data:`` chunks ending in ``[DONE]``."""

    name = "openai"
    request_id_header = b"x-request-id: "
    wrong_json_stream_end = b"data: [DONE]\n\n"

    def validate(self, body: bytes, parsed: Any) -> str | None:
        """Return why the request body is rejected (400), or None."""
        return validate_common(body, parsed)

    def error_status(self, shape: ErrorShape) -> int:
        """Return OpenAI's status for a known provider error."""
        return shape.openai_status

    def error_body(self, status: int, code: str | None, message: str | None, rid: str) -> bytes:
        """Encode an OpenAI ``{"error": ...}`` body (the request id is in a header)."""
        shape = ERROR_CODES.get(code) if code else None
        ocode: str | None
        if shape is not None:
            otype, ocode, msg = shape.openai_type, shape.openai_code, shape.openai_message
        else:
            otype, ocode = _BY_STATUS.get(
                status, ("server_error" if status >= 500 else "invalid_request_error", None)
            )
            ocode = code or ocode
            msg = reason(status)
        return ENCODER.encode(
            {"error": {"message": message or msg, "type": otype, "param": None, "code": ocode}}
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
        """Return a ``chat.completion`` object."""
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        finish = "stop"
        if extras.refusal is not None:
            # OpenAI: no content, the refusal text, and (sic) finish_reason "stop".
            message = {"role": "assistant", "content": None, "refusal": extras.refusal}
        elif extras.tool_call is not None:
            message["content"] = text or None
            message["tool_calls"] = [
                {
                    "id": _call_id(n),
                    "type": "function",
                    "function": {"name": extras.tool_call, "arguments": extras.tool_arguments},
                }
            ]
            finish = "tool_calls"
        return {
            "id": _id(n),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_routeledger_fake",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
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
        """Return the chunks of a stream, with a usage chunk if the request asks for one.

        A refusal streams as ``refusal`` deltas instead of text; a tool call follows the
        text as tool-call deltas (id and name, then the arguments in two fragments).
        """
        options = parsed.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        base: dict[str, Any] = {
            "id": _id(n),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_routeledger_fake",
        }
        if usage:
            base["usage"] = None

        def event(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        pre = event({"role": "assistant", "content": "", "refusal": None}, None)
        finish = "stop"
        if extras.refusal is not None:
            pre = event({"role": "assistant", "content": None, "refusal": ""}, None)
            chunks = [event({"refusal": part}, None) for part in split_in_two(extras.refusal)]
        else:
            chunks = [event({"content": text}, None) for text in texts]
        post = b""
        if extras.tool_call is not None and extras.refusal is None:
            first = {
                "index": 0,
                "id": _call_id(n),
                "type": "function",
                "function": {"name": extras.tool_call, "arguments": ""},
            }
            post += event({"tool_calls": [first]}, None)
            for part in split_in_two(extras.tool_arguments):
                post += event({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, None)
            finish = "tool_calls"
        post += event({}, finish)
        if usage:
            totals = _usage(input_tokens, output_tokens, extras)
            post += _sse({**base, "choices": [], "usage": totals})
        post += b"data: [DONE]\n\n"
        error = _sse(
            {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )
        return pre, chunks, post, error


OPENAI = OpenAIFormat()
