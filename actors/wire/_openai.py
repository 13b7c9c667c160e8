"""The OpenAI chat completions wire format (OpenAI and any OpenAI-compatible server).

``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>`` (only when a key
exists). Streams are server-sent events of ``chat.completion.chunk`` objects ending with
``data: [DONE]``; with ``stream_options.include_usage`` the usage arrives in a last chunk
whose ``choices`` is empty.

Reasoning models (``ModelSpec.is_reasoning``: the o-series and GPT-5 on api.openai.com by
default) get ``max_completion_tokens`` instead of ``max_tokens`` and never ``temperature`` or
``top_p``, which they refuse. A refusal (``message.refusal``, or ``refusal`` deltas in a stream)
is kept as ``Response.refusal`` with finish reason ``"refusal"``, never an empty success.
Cached prompt tokens (``prompt_tokens_details.cached_tokens``) and reasoning tokens
(``completion_tokens_details.reasoning_tokens``) are read into :class:`Usage`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from routeledger.actors.wire._errors import error_from_payload
from routeledger.actors.wire._http import HTTPAdapter, StreamState, decode_answer
from routeledger.actors.wire._sse import SSEEvent
from routeledger.events import (
    BadRequest,
    ImagePart,
    Message,
    ModelSpec,
    ProtocolError,
    Request,
    Response,
    Secret,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["OpenAIAdapter", "build_payload", "parse_response"]

_Count = Annotated[int, msgspec.Meta(ge=0)]

FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
"""OpenAI's finish reasons in routeledger's vocabulary; unknown ones pass through."""


class _PromptDetails(msgspec.Struct):
    cached_tokens: _Count | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: _Count | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: _Count | None = None
    completion_tokens: _Count | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Function(msgspec.Struct):
    name: str = ""
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _Function
    id: str = ""


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    model: str | None = None
    usage: _Usage | None = None


class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None
    refusal: str | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] | None = None
    model: str | None = None
    usage: _Usage | None = None
    error: Any = None


_COMPLETION = msgspec.json.Decoder(_Completion)
_CHUNK = msgspec.json.Decoder(_Chunk)


def _image_url(part: ImagePart) -> str:
    if part.url is not None:
        return part.url
    if part.data is not None and part.media_type:
        return f"data:{part.media_type};base64,{part.data}"
    raise BadRequest("an image part needs a url, or data with its media_type")


def _content(parts: list[TextPart | ImagePart]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "text", "text": part.text})
        else:
            out.append({"type": "image_url", "image_url": {"url": _image_url(part)}})
    return out


def _message(m: Message) -> dict[str, Any]:
    content = m.content
    if m.tool_calls is None and m.tool_call_id is None and m.name is None and type(content) is str:
        return {"role": m.role, "content": content}  # the common case, kept cheap
    out: dict[str, Any] = {"role": m.role}
    if not isinstance(content, str):
        out["content"] = _content(content)
    elif content or not m.tool_calls:
        # An assistant turn that only calls tools has no content at all.
        out["content"] = content
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments},
            }
            for tc in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _tool_choice(choice: str | dict[str, object]) -> str | dict[str, object]:
    if isinstance(choice, dict):
        if choice.get("type") == "tool" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        return choice
    if choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    return {"type": "function", "function": {"name": choice}}


def build_payload(
    request: Request, model: ModelSpec, *, stream: bool, reasoning: bool = False
) -> dict[str, Any]:
    """Return the chat completions request body for ``request`` on ``model``.

    Args:
        request: The request.
        model: The model it goes to.
        stream: Ask for a stream (with usage in its last chunk).
        reasoning: The model is a reasoning model: ``max_completion_tokens``, no sampling
            parameters.

    ``reasoning_effort``, ``response_format`` and ``seed`` are passed through when set;
    ``extra_body`` is merged in last and may override anything.

    Raises:
        BadRequest: The request cannot be expressed (an image without data or URL).
    """
    payload: dict[str, Any] = {
        "model": model.wire_name,
        "messages": [_message(m) for m in request.messages],
    }
    if request.max_tokens is not None:
        payload["max_completion_tokens" if reasoning else "max_tokens"] = request.max_tokens
    if request.temperature is not None and not reasoning:
        payload["temperature"] = request.temperature
    if request.top_p is not None and not reasoning:
        payload["top_p"] = request.top_p
    if request.reasoning_effort is not None:
        payload["reasoning_effort"] = request.reasoning_effort
    if request.response_format is not None:
        payload["response_format"] = request.response_format
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.stop:
        payload["stop"] = request.stop
    if request.tools:
        tools = []
        for t in request.tools:
            fn: dict[str, Any] = {"name": t.name}
            if t.description:
                fn["description"] = t.description
            if t.parameters:
                fn["parameters"] = t.parameters
            tools.append({"type": "function", "function": fn})
        payload["tools"] = tools
    if request.tool_choice is not None:
        payload["tool_choice"] = _tool_choice(request.tool_choice)
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    if request.extra_body:
        payload.update(request.extra_body)
    return payload


def _finish(reason: str | None) -> str | None:
    return None if reason is None else FINISH_REASONS.get(reason, reason)


def _to_usage(usage: _Usage | None) -> Usage | None:
    if usage is None or (usage.prompt_tokens is None and usage.completion_tokens is None):
        return None
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        # prompt_tokens and completion_tokens already include these: no sum to make.
        cached_input_tokens=(prompt.cached_tokens or 0) if prompt is not None else 0,
        reasoning_tokens=(completion.reasoning_tokens or 0) if completion is not None else 0,
    )


def parse_response(body: bytes, request: Request, model: ModelSpec, *, provider: str) -> Response:
    """Return the :class:`Response` a chat completions body holds.

    Raises:
        ProtocolError: The body is not a chat completion.
        ProviderError: The body is an error object (some compatible servers answer 200).
    """
    completion = decode_answer(
        _COMPLETION,
        body,
        what="a chat completion",
        provider=provider,
        request_id=request.request_id,
    )
    if not completion.choices:
        raise ProtocolError(
            "chat completion has no choices",
            provider=provider,
            request_id=request.request_id,
            status=200,
        )
    choice = completion.choices[0]
    message = choice.message
    usage = _to_usage(completion.usage)
    refusal = message.refusal or None
    return Response(
        content=message.content or "",
        provider=provider,
        model=model.name,
        upstream_model=completion.model or None,
        request_id=request.request_id,
        usage=usage,
        cost=model.cost(usage),
        # OpenAI says "stop" for a refusal: the answer is no success, so say so.
        finish_reason="refusal" if refusal else _finish(choice.finish_reason),
        refusal=refusal,
        tool_calls=[
            ToolCall(id=tc.id, name=tc.function.name, arguments=tc.function.arguments or "{}")
            for tc in message.tool_calls
        ]
        if message.tool_calls
        else [],
    )


class _OpenAIStream(StreamState):
    __slots__ = ("_provider", "_refused", "_request_id", "_usage")

    def __init__(self, model: str, provider: str, request_id: str) -> None:
        super().__init__(model)
        self._provider = provider
        self._request_id = request_id
        self._refused = False
        self._usage: Usage | None = None

    def usage(self) -> Usage | None:
        return self._usage

    def on_event(self, event: SSEEvent) -> StreamChunk | None:
        data = event.data
        if data == "[DONE]":
            self.done = True
            return None
        chunk = _CHUNK.decode(data)
        if chunk.error is not None:
            raise error_from_payload(
                {"error": chunk.error}, provider=self._provider, request_id=self._request_id
            )
        if chunk.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage_in = chunk.usage.prompt_tokens
            self.usage_out = chunk.usage.completion_tokens
            self._usage = _to_usage(chunk.usage)
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        delta = choice.delta
        refusal = delta.refusal if delta is not None else None
        if refusal:
            self._refused = True
        if choice.finish_reason is not None:
            self.finish_reason = "refusal" if self._refused else _finish(choice.finish_reason)
        if delta is None:
            return None
        tool_calls = None
        if delta.tool_calls:
            tool_calls = [
                ToolCallDelta(
                    index=tc.index,
                    id=tc.id,
                    name=tc.function.name if tc.function is not None else None,
                    arguments=(tc.function.arguments or "") if tc.function is not None else "",
                )
                for tc in delta.tool_calls
            ]
        text = delta.content
        if not text and tool_calls is None and not refusal:
            return None
        return StreamChunk(
            delta=text or "",
            tool_calls=tool_calls,
            provider=self._provider,
            model=self.model,
            refusal=refusal or None,
        )


class OpenAIAdapter(HTTPAdapter):
    """The OpenAI chat completions format over one ``httpx.Client``."""

    kind = "openai"

    def _make_headers(self, api_key: Secret | None) -> dict[str, str]:
        headers = dict(self.config.headers)
        headers["content-type"] = "application/json"
        if api_key is not None:
            headers["authorization"] = f"Bearer {api_key.reveal()}"
        return headers

    def _completion_url(self) -> str:
        return f"{self._base_url}/chat/completions"

    def _payload(self, request: Request, model: ModelSpec, *, stream: bool) -> dict[str, Any]:
        return build_payload(
            request, model, stream=stream, reasoning=model.is_reasoning(self._base_url)
        )

    def _parse(self, body: bytes, request: Request, model: ModelSpec) -> Response:
        return parse_response(body, request, model, provider=self._provider)

    def _stream_state(self, model: ModelSpec, request: Request) -> StreamState:
        return _OpenAIStream(model.name, self._provider, request.request_id)
