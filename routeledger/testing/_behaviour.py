"""What the fake provider is told to do: latencies, failures, broken bodies and streams.

`Behaviour` is pure configuration, validated at construction; `ERROR_CODES` gives each
provider error code its status and body in both wire formats; `reply_texts` splits the reply
into the text chunks of a stream. How a request is answered under a behaviour lives in
`routeledger.testing._answer`.
"""

from __future__ import annotations

import msgspec

__all__ = ["ERROR_CODES", "Behaviour", "ErrorShape", "reply_texts"]

MALFORMED = frozenset({"html", "wrong_json", "not_utf8", "huge"})
RESETS = frozenset({"before_response", "mid_body"})
_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


class Behaviour(msgspec.Struct, kw_only=True, frozen=True):
    """How the fake provider answers; every field is optional.

    Attributes:
        latency_ms: Delay before the response head (JSON) or before the first chunk (stream,
            unless ``ttft_ms`` is set). Also applied before error answers and resets.
        jitter_ms: Uniform random extra delay in ``[0, jitter_ms)`` from the seeded RNG.
        ttft_ms: Time to first token of a stream; replaces ``latency_ms`` for streams.
        inter_token_ms: Delay between two streamed text chunks.
        output_tokens: Number of text chunks streamed, and the reported output tokens.
        content: Reply text (split into ``output_tokens`` chunks when streaming); the default
            is deterministic words, one per token.
        fail_rate: Probability of a random failure with ``fail_status`` (seeded RNG).
        fail_status: The status of a random failure.
        status: Force this status on every request (errors get a body in the path's format).
        retry_after: ``retry-after`` header value sent with 429/503/529 answers.
        retry_after_ms: ``retry-after-ms`` header value sent with 429/503/529 answers.
        error_code: Shape the error body after this provider error (see `ERROR_CODES`); with
            no ``status``/``fail_rate`` every request fails with the code's usual status.
        malformed: ``"html"`` (200 text/html page), ``"wrong_json"`` (200 JSON, or SSE events,
            of the wrong shape), ``"not_utf8"`` (200 body with invalid UTF-8 bytes),
            ``"huge"`` (200 chunked body of ``huge_bytes``, far over 8 MiB, written without
            buffering; a stream gets one single oversized SSE line).
        huge_bytes: Size of the ``"huge"`` body.
        truncate_after_chunks: A stream ends after this many text chunks with no terminator
            (no ``[DONE]``/``message_stop``): the chunked body is ended cleanly and the
            connection closed.
        error_event_after_chunks: A stream sends an error event after this many text chunks
            (Anthropic ``event: error`` with ``overloaded_error``; OpenAI a
            ``data: {"error": ...}`` line) and ends with no terminator.
        stall_after_chunks: A stream pauses ``stall_ms`` after this many text chunks.
        stall_ms: Length of the mid-stream pause.
        reset: ``"before_response"`` (read the request, then close with RST, SO_LINGER 0) or
            ``"mid_body"`` (send the head and part of the body, then RST).
        models: Model ids served by ``GET /v1/models``.
        tool_call: The reply calls this function (``tool_arguments`` as its JSON arguments),
            after its text: OpenAI ``tool_calls`` (and their deltas), Anthropic ``tool_use``.
        tool_arguments: The tool call's arguments, a JSON object.
        refusal: The model refuses with this text: OpenAI ``message.refusal`` (refusal deltas
            in a stream, no content), Anthropic ``stop_reason: "refusal"`` with it as text.
        cached_input_tokens: Prompt tokens reported as read from the cache (added to the
            prompt): OpenAI ``prompt_tokens_details.cached_tokens``, Anthropic
            ``cache_read_input_tokens``.
        cache_write_tokens: Prompt tokens reported as written to the cache (Anthropic
            ``cache_creation_input_tokens``; OpenAI reports none, so they are plain prompt).
        reasoning_tokens: Hidden reasoning tokens (added to the output): OpenAI
            ``completion_tokens_details.reasoning_tokens``; Anthropic counts them in
            ``output_tokens``.
        server_tools: Anthropic answers carry a ``thinking`` block, a ``server_tool_use``
            block (with ``input_json_delta`` events in a stream) and a ``web_search_tool_result``
            block before the text, as a web-search turn does.
        reasoning_models: Models treated as OpenAI reasoning models: a chat completions
            request for one with ``max_tokens`` is refused (400 ``unsupported_parameter``), and
            one with ``temperature`` or ``top_p`` too (400 ``unsupported_value``).
        ignore_stream: Answer a stream request with the whole JSON answer, as a server
            that ignores ``"stream": true`` does.
        rpm: The provider's own requests-per-minute limit (a token bucket refilled
            continuously); a chat request beyond it gets 429 ``rate_limit_exceeded``. With
            ``rpm`` or ``tpm`` set, every chat answer carries the rate-limit headers
            (``x-ratelimit-remaining-*``, or ``anthropic-ratelimit-*-remaining``).
        tpm: The provider's own tokens-per-minute limit (prompt estimate plus
            ``max_tokens``).
        key_statuses: A request (chat or model listing) sent with one of these API keys
            (``Authorization: Bearer`` or ``x-api-key``) gets that status (401: refused,
            429: rate-limited), to test several keys per provider.
        trickle_head_ms: The response head is written one byte at a time, this far apart (a
            server that keeps a per-read timeout from ever firing).
        trickle_ms: After the first write of a response (a stream's head, preamble and first
            chunk, when ``inter_token_ms`` spaces the chunks), every byte is written alone,
            this far apart: a stream that trickles after its first chunk.
        headers: Extra response headers on every answer (``x-ratelimit-*`` say).
        rate_limit_requests: A limit of the fake's own over any window (a short one suits
            tests; ``rpm``/``tpm`` above are per-minute buckets whose answers say what is
            left): chat requests admitted per sliding ``rate_limit_window_s``; beyond it, a
            429 whose ``retry-after-ms`` and reset headers (OpenAI
            ``x-ratelimit-reset-requests``, Anthropic ``anthropic-ratelimit-requests-reset``)
            say when the oldest admitted one expires.
        rate_limit_window_s: The window of ``rate_limit_requests``.
        rate_limit_reset_only: The 429 of the fake's own limit carries only the reset headers,
            no ``retry-after``/``retry-after-ms``.
    """

    latency_ms: float = 0
    jitter_ms: float = 0
    ttft_ms: float | None = None
    inter_token_ms: float = 0
    output_tokens: int = 8
    content: str | None = None
    fail_rate: float = 0
    fail_status: int = 500
    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: int | None = None
    error_code: str | None = None
    malformed: str | None = None
    huge_bytes: int = 24 << 20
    truncate_after_chunks: int | None = None
    error_event_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    stall_ms: float = 0
    reset: str | None = None
    models: list[str] = msgspec.field(default_factory=lambda: ["fake-model"])
    tool_call: str | None = None
    tool_arguments: str = "{}"
    refusal: str | None = None
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    server_tools: bool = False
    reasoning_models: list[str] = msgspec.field(default_factory=list)
    ignore_stream: bool = False
    rpm: int | None = None
    tpm: int | None = None
    key_statuses: dict[str, int] | None = None
    trickle_head_ms: float = 0
    trickle_ms: float = 0
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    rate_limit_requests: int | None = None
    rate_limit_window_s: float = 60.0
    rate_limit_reset_only: bool = False

    def __post_init__(self) -> None:
        """Reject values the server could not honour, at construction time."""
        for name in ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        try:
            arguments = msgspec.json.decode(self.tool_arguments)
        except msgspec.DecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise ValueError("tool_arguments must be a JSON object")
        if not 0 <= self.fail_rate <= 1:
            raise ValueError(f"fail_rate must be within [0, 1], got {self.fail_rate}")
        if self.malformed is not None and self.malformed not in MALFORMED:
            raise ValueError(f"malformed must be one of {sorted(MALFORMED)}")
        if self.reset is not None and self.reset not in RESETS:
            raise ValueError(f"reset must be one of {sorted(RESETS)}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.output_tokens < 0:
            raise ValueError("output_tokens must be >= 0")
        if self.rate_limit_requests is not None and self.rate_limit_requests < 1:
            raise ValueError("rate_limit_requests must be >= 1")
        if not self.rate_limit_window_s > 0:
            raise ValueError("rate_limit_window_s must be > 0")
        for name, value in self.headers.items():
            if not name or any(c in name for c in ": \r\n") or any(c in value for c in "\r\n"):
                raise ValueError(f"header {name!r} cannot be sent")
        for name in ("status", "fail_status"):
            value = getattr(self, name)
            if value is not None and not 100 <= value <= 599:
                raise ValueError(f"{name} must be an HTTP status, got {value}")


def reply_texts(behaviour: Behaviour) -> list[str]:
    """Split the reply into the text chunks of a stream (joined, the JSON reply)."""
    count = behaviour.output_tokens
    if behaviour.content is None:
        return [(" " if i else "") + _WORDS[i % len(_WORDS)] for i in range(count)]
    content = behaviour.content
    if not content:
        return []
    pieces = max(1, min(count, len(content)))
    step, extra = divmod(len(content), pieces)
    out: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + step + (1 if i < extra else 0)
        out.append(content[start:end])
        start = end
    return out


class ErrorShape(msgspec.Struct, frozen=True):
    """One provider error as each wire format states it (status, type, code, message)."""

    openai_status: int
    openai_type: str
    openai_code: str | None
    openai_message: str
    anthropic_status: int
    anthropic_type: str
    anthropic_message: str


# Real providers disagree on status and vocabulary for the same condition (an exhausted
# OpenAI quota is a 429 with type insufficient_quota; Anthropic says 402 billing_error), so
# each code carries both shapes. Keys are OpenAI codes plus Anthropic error types.
ERROR_CODES: dict[str, ErrorShape] = {
    "rate_limit_exceeded": ErrorShape(
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
        429,
        "rate_limit_error",
        "Number of requests has exceeded your per-minute rate limit.",
    ),
    "insufficient_quota": ErrorShape(
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
        402,
        "billing_error",
        "Your credit balance is too low to access the API.",
    ),
    "context_length_exceeded": ErrorShape(
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9000 tokens. Please reduce the length of the messages.",
        400,
        "invalid_request_error",
        "prompt is too long: 9000 tokens > 8192 maximum",
    ),
    "invalid_api_key": ErrorShape(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided.",
        401,
        "authentication_error",
        "invalid x-api-key",
    ),
    "permission_denied": ErrorShape(
        403,
        "invalid_request_error",
        "permission_denied",
        "You are not allowed to use this model.",
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "model_not_found": ErrorShape(
        404,
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
        404,
        "not_found_error",
        "model: not found",
    ),
    "server_error": ErrorShape(
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
        500,
        "api_error",
        "Internal server error",
    ),
    "overloaded": ErrorShape(
        503,
        "server_error",
        None,
        "The engine is currently overloaded, please try again later.",
        529,
        "overloaded_error",
        "Overloaded",
    ),
}
ERROR_CODES["rate_limit_error"] = ERROR_CODES["rate_limit_exceeded"]
ERROR_CODES["billing_error"] = ERROR_CODES["insufficient_quota"]
ERROR_CODES["authentication_error"] = ERROR_CODES["invalid_api_key"]
ERROR_CODES["permission_error"] = ERROR_CODES["permission_denied"]
ERROR_CODES["not_found_error"] = ERROR_CODES["model_not_found"]
ERROR_CODES["api_error"] = ERROR_CODES["server_error"]
ERROR_CODES["overloaded_error"] = ERROR_CODES["overloaded"]
