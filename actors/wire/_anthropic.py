r"""The Anthropic messages wire format.

``POST {base_url}/messages`` with ``x-api-key`` and ``anthropic-version``. System messages go
to the top-level ``system``; ``max_tokens`` is required; tool calls are ``tool_use`` blocks and
their results ``tool_result`` blocks in a user turn. Streams are server-sent events:
``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``,
``message_stop`` (the terminator), ``ping``, and ``error``.

Blocks that are not the answer's text or a client tool call (``thinking``,
``redacted_thinking``, ``server_tool_use`` with its ``input_json_delta`` events,
``web_search_tool_result`` and any type newer than this code) are skipped, never fatal, and
counted: the count and the types are logged at DEBUG (logger ``routeledger.wire``) when the
answer ends. Cache reads and writes are added to ``input_tokens`` (Anthropic counts them
apart) and kept as ``cached_input_tokens`` / ``cache_write_tokens``. ``cache_control`` on a
text part (a system message's included), or on a tool, is sent as a cache breakpoint.

``Request.reasoning_effort`` turns on extended thinking with a budget from
:data:`THINKING_BUDGETS` (``none`` leaves it off; other values are refused as
:class:`UnsupportedByProvider`, so another provider may serve the request); the budget is
added to ``max_tokens`` (Anthropic counts thinking in it), and ``temperature`` / ``top_p``
are left out, which thinking does not allow. ``response_format`` has no Anthropic equivalent
and is refused the same way; ``seed`` is left out; ``extra_body`` is merged in last.

The module is a little over 500 lines because it is one wire format both ways: the request
encoding, the answer decoding and the stream's event-by-event assembly, as the OpenAI
module is for its format.
"""

from __future__ import annotations

import logging
from collections import Counter
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
    UnsupportedByProvider,
    Usage,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "THINKING_BUDGETS",
    "AnthropicAdapter",
    "build_payload",
    "parse_response",
]

_LOG = logging.getLogger("routeledger.wire")

THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
"""``thinking.budget_tokens`` for each ``Request.reasoning_effort`` (1024 is Anthropic's least)."""

DEFAULT_MAX_TOKENS = 1024
"""``max_tokens`` sent when neither the request nor the model sets one (Anthropic needs it)."""

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}
"""Anthropic's stop reasons in routeledger's vocabulary; unknown ones pass through."""

_Count = Annotated[int, msgspec.Meta(ge=0)]


class _Usage(msgspec.Struct):
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    cache_creation_input_tokens: _Count | None = None
    cache_read_input_tokens: _Count | None = None


class _Block(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Message(msgspec.Struct):
    content: list[_Block]
    model: str | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _Typed(msgspec.Struct):
    type: str


class _StartMessage(msgspec.Struct):
    model: str | None = None
    usage: _Usage | None = None


class _MessageStart(msgspec.Struct):
    message: _StartMessage


class _BlockStart(msgspec.Struct):
    index: int
    content_block: _Block


class _Delta(msgspec.Struct):
    type: str
    text: str | None = None
    partial_json: str | None = None


class _BlockDelta(msgspec.Struct):
    index: int
    delta: _Delta


class _StopDelta(msgspec.Struct):
    stop_reason: str | None = None


class _MessageDelta(msgspec.Struct):
    delta: _StopDelta | None = None
    usage: _Usage | None = None


_MESSAGE = msgspec.json.Decoder(_Message)
_TYPED = msgspec.json.Decoder(_Typed)
_MESSAGE_START = msgspec.json.Decoder(_MessageStart)
_BLOCK_START = msgspec.json.Decoder(_BlockStart)
_BLOCK_DELTA = msgspec.json.Decoder(_BlockDelta)
_MESSAGE_DELTA = msgspec.json.Decoder(_MessageDelta)
_ANY = msgspec.json.Decoder()


def _image(part: ImagePart) -> dict[str, Any]:
    url = part.url
    if url is not None:
        if url.startswith("data:"):
            # A data URL becomes a base64 source: Anthropic does not fetch data: URLs.
            head, sep, data = url[5:].partition(",")
            media_type, _, encoding = head.partition(";")
            if not sep or encoding != "base64" or not media_type:
                raise BadRequest("an image data URL must be data:<media type>;base64,<data>")
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            }
        return {"type": "image", "source": {"type": "url", "url": url}}
    if part.data is not None and part.media_type:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": part.media_type, "data": part.data},
        }
    raise BadRequest("an image part needs a url, or data with its media_type")


def _text_block(part: TextPart) -> dict[str, Any]:
    if part.cache_control is None:
        return {"type": "text", "text": part.text}
    return {"type": "text", "text": part.text, "cache_control": part.cache_control}


def _blocks(content: str | list[TextPart | ImagePart]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [_text_block(p) if isinstance(p, TextPart) else _image(p) for p in content]


def _system(messages: list[Message]) -> str | list[dict[str, Any]] | None:
    """Return the top-level ``system``: one string, or text blocks when one is a breakpoint."""
    parts = [
        p
        for m in messages
        if m.role == "system" and not isinstance(m.content, str)
        for p in m.content
        if isinstance(p, TextPart) and p.cache_control is not None
    ]
    texts = [t for m in messages if m.role == "system" and (t := m.text())]
    if not parts:
        return "\n\n".join(texts) if texts else None
    blocks: list[dict[str, Any]] = []
    for m in messages:
        if m.role != "system":
            continue
        if isinstance(m.content, str):
            if m.content:
                blocks.append({"type": "text", "text": m.content})
        else:
            blocks.extend(_text_block(p) for p in m.content if isinstance(p, TextPart) and p.text)
    return blocks


def _unsupported(what: str) -> UnsupportedByProvider:
    return UnsupportedByProvider(f"not supported by the Anthropic messages API: {what}")


def _tool_input(arguments: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("a tool call's arguments are not valid JSON") from exc
    if not isinstance(value, dict):
        raise BadRequest("a tool call's arguments must be a JSON object")
    return value


def _tool_choice(choice: str | dict[str, object]) -> dict[str, object]:
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, dict):
            return {"type": "tool", "name": function.get("name")}
        return choice
    if choice in ("auto", "none", "any"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def build_payload(request: Request, model: ModelSpec, *, stream: bool) -> dict[str, Any]:
    """Return the messages request body for ``request`` on ``model``.

    Raises:
        BadRequest: The request cannot be expressed (a tool message without its call id,
            tool arguments that are not a JSON object, an image without data or URL).
    """
    messages: list[dict[str, Any]] = []
    # The content list of the user turn holding the latest tool results: consecutive tool
    # messages answer one assistant turn, so they share one user turn.
    results: list[dict[str, Any]] | None = None
    for m in request.messages:
        role = m.role
        if role == "system":
            continue
        if role == "tool":
            if m.tool_call_id is None:
                raise BadRequest("a tool message needs the tool_call_id it answers")
            result = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content if isinstance(m.content, str) else _blocks(m.content),
            }
            if results is None:
                results = [result]
                messages.append({"role": "user", "content": results})
            else:
                results.append(result)
            continue
        results = None
        if role == "assistant" and m.tool_calls:
            blocks = _blocks(m.content)
            blocks.extend(
                {
                    "type": "tool_use",
                    "id": tc.id,
                    "name": tc.name,
                    "input": _tool_input(tc.arguments),
                }
                for tc in m.tool_calls
            )
            messages.append({"role": "assistant", "content": blocks})
        elif isinstance(m.content, str):
            messages.append({"role": role, "content": m.content})
        else:
            messages.append({"role": role, "content": _blocks(m.content)})
    if request.max_tokens is not None:
        max_tokens = request.max_tokens
    elif model.max_output is not None:
        max_tokens = model.max_output
    else:
        max_tokens = DEFAULT_MAX_TOKENS
    thinking = None
    effort = request.reasoning_effort
    if effort is not None and effort != "none":
        budget = THINKING_BUDGETS.get(effort)
        if budget is None:
            raise _unsupported(f"reasoning_effort {effort!r}")
        thinking = {"type": "enabled", "budget_tokens": budget}
        max_tokens += budget  # thinking counts in max_tokens; the answer keeps its room
    if request.response_format is not None:
        raise _unsupported("response_format")
    payload: dict[str, Any] = {"model": model.wire_name, "max_tokens": max_tokens}
    system = _system(request.messages)
    if system is not None:
        payload["system"] = system
    payload["messages"] = messages
    if thinking is not None:
        payload["thinking"] = thinking
    else:
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        if request.top_p is not None:
            payload["top_p"] = request.top_p
    if request.stop:
        payload["stop_sequences"] = request.stop
    if request.tools:
        tools = []
        for t in request.tools:
            tool: dict[str, Any] = {"name": t.name}
            if t.description:
                tool["description"] = t.description
            tool["input_schema"] = t.parameters or {"type": "object", "properties": {}}
            if t.cache_control is not None:
                tool["cache_control"] = t.cache_control
            tools.append(tool)
        payload["tools"] = tools
    if request.tool_choice is not None:
        payload["tool_choice"] = _tool_choice(request.tool_choice)
    if stream:
        payload["stream"] = True
    if request.extra_body:
        payload.update(request.extra_body)
    return payload


def _finish(reason: str | None) -> str | None:
    return None if reason is None else FINISH_REASONS.get(reason, reason)


def _to_usage(usage: _Usage | None) -> Usage | None:
    if usage is None:
        return None
    input_tokens = _input_tokens(usage)
    if input_tokens is None and usage.output_tokens is None:
        return None
    return Usage(
        input_tokens=input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cached_input_tokens=usage.cache_read_input_tokens or 0,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
    )


def _log_skipped(skipped: Counter[str], provider: str, request_id: str) -> None:
    if skipped:
        _LOG.debug(
            "skipped %d content block(s) or delta(s) not part of the answer (%s); "
            "provider=%s request_id=%s",
            skipped.total(),
            ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())),
            provider,
            request_id,
        )


def _input_tokens(usage: _Usage) -> int | None:
    # Anthropic counts cached prompt tokens apart; OpenAI's prompt_tokens includes them.
    # Summing keeps input_tokens meaning "the whole prompt" for both formats.
    if usage.input_tokens is None:
        return None
    return (
        usage.input_tokens
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


def parse_response(body: bytes, request: Request, model: ModelSpec, *, provider: str) -> Response:
    """Return the :class:`Response` a messages body holds.

    Raises:
        ProtocolError: The body is not a message.
        ProviderError: The body is an error object.
    """
    message = decode_answer(
        _MESSAGE, body, what="a message", provider=provider, request_id=request.request_id
    )
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    skipped: Counter[str] = Counter()
    for block in message.content:
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use":
            if block.id is None or block.name is None:
                raise ProtocolError(
                    "tool_use block without id or name",
                    provider=provider,
                    request_id=request.request_id,
                    status=200,
                )
            arguments = "{}" if block.input is None else msgspec.json.encode(block.input).decode()
            tool_calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
        else:
            skipped[block.type] += 1  # thinking, server tools and their results, newer types
    _log_skipped(skipped, provider, request.request_id)
    usage = _to_usage(message.usage)
    content = texts[0] if len(texts) == 1 else "".join(texts)
    finish = _finish(message.stop_reason)
    return Response(
        content=content,
        provider=provider,
        model=model.name,
        upstream_model=message.model or None,
        request_id=request.request_id,
        usage=usage,
        cost=model.cost(usage),
        finish_reason=finish,
        tool_calls=tool_calls,
        # Anthropic has no refusal text of its own: what the model said is the refusal.
        refusal=(content or "refused") if finish == "refusal" else None,
    )


class _AnthropicStream(StreamState):
    __slots__ = ("_cache_read", "_cache_write", "_provider", "_request_id", "_skipped", "_tools")

    def __init__(self, model: str, provider: str, request_id: str) -> None:
        super().__init__(model)
        self._provider = provider
        self._request_id = request_id
        # Content block index -> tool call index: tool calls are numbered 0, 1, ... as in
        # OpenAI streams, whatever text blocks come between them.
        self._tools: dict[int, int] = {}
        self._cache_read = 0
        self._cache_write = 0
        self._skipped: Counter[str] = Counter()

    def usage(self) -> Usage | None:
        if self.usage_in is None and self.usage_out is None:
            return None
        return Usage(
            input_tokens=self.usage_in or 0,
            output_tokens=self.usage_out or 0,
            cached_input_tokens=self._cache_read,
            cache_write_tokens=self._cache_write,
        )

    def _take_usage(self, usage: _Usage) -> None:
        # Cumulative counts: the latest report wins.
        if usage.output_tokens is not None:
            self.usage_out = usage.output_tokens
        if usage.input_tokens is not None:
            self.usage_in = _input_tokens(usage)
            self._cache_read = usage.cache_read_input_tokens or 0
            self._cache_write = usage.cache_creation_input_tokens or 0

    def _chunk(self, text: str, tool: ToolCallDelta | None) -> StreamChunk:
        return StreamChunk(
            delta=text,
            tool_calls=[tool] if tool is not None else None,
            provider=self._provider,
            model=self.model,
        )

    def on_event(self, event: SSEEvent) -> StreamChunk | None:
        name = event.event
        data = event.data
        if name == "message":
            name = _TYPED.decode(data).type  # a stream without event names: use the data
        if name == "content_block_delta":
            block_delta = _BLOCK_DELTA.decode(data)
            delta = block_delta.delta
            if delta.type == "text_delta":
                return self._chunk(delta.text, None) if delta.text else None
            index = self._tools.get(block_delta.index)
            if delta.type == "input_json_delta" and index is not None:
                if not delta.partial_json:
                    return None
                return self._chunk("", ToolCallDelta(index=index, arguments=delta.partial_json))
            # A server tool's input, thinking, signatures, and delta types newer than this code.
            self._skipped[delta.type] += 1
            return None
        if name == "content_block_start":
            start = _BLOCK_START.decode(data)
            block = start.content_block
            if block.type == "tool_use":
                index = self._tools[start.index] = len(self._tools)
                return self._chunk("", ToolCallDelta(index=index, id=block.id, name=block.name))
            if block.type == "text":
                return self._chunk(block.text, None) if block.text else None
            self._skipped[block.type] += 1
            return None
        if name == "message_start":
            message = _MESSAGE_START.decode(data).message
            if message.model:
                self.model = message.model
            if message.usage is not None:
                self._take_usage(message.usage)
            return None
        if name == "message_delta":
            message_delta = _MESSAGE_DELTA.decode(data)
            if message_delta.delta is not None and message_delta.delta.stop_reason is not None:
                self.finish_reason = _finish(message_delta.delta.stop_reason)
            if message_delta.usage is not None:
                self._take_usage(message_delta.usage)
            return None
        if name == "message_stop":
            self.done = True
            _log_skipped(self._skipped, self._provider, self._request_id)
            return None
        if name == "error":
            raise error_from_payload(
                _ANY.decode(data), provider=self._provider, request_id=self._request_id
            )
        return None  # ping, content_block_stop, and event types newer than this code


class AnthropicAdapter(HTTPAdapter):
    """The Anthropic messages format over one ``httpx.Client``."""

    kind = "anthropic"

    def _make_headers(self, api_key: Secret | None) -> dict[str, str]:
        headers = dict(self.config.headers)
        headers["content-type"] = "application/json"
        headers["anthropic-version"] = self.config.anthropic_version
        if api_key is not None:
            headers["x-api-key"] = api_key.reveal()
        return headers

    def _completion_url(self) -> str:
        return f"{self._base_url}/messages"

    def _payload(self, request: Request, model: ModelSpec, *, stream: bool) -> dict[str, Any]:
        return build_payload(request, model, stream=stream)

    def _parse(self, body: bytes, request: Request, model: ModelSpec) -> Response:
        return parse_response(body, request, model, provider=self._provider)

    def _stream_state(self, model: ModelSpec, request: Request) -> StreamState:
        return _AnthropicStream(model.name, self._provider, request.request_id)
