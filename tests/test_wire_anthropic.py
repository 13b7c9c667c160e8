"""Tests of the Anthropic messages adapter against exact wire payloads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from routeledger.actors.wire import AnthropicAdapter, WireAdapter, make_adapter
from routeledger.events import (
    AuthenticationError,
    BadRequest,
    ImagePart,
    Message,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderUnavailable,
    RateLimited,
    Request,
    Secret,
    StreamChunk,
    StreamInterrupted,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    UnsupportedByProvider,
    Usage,
)

Handler = Callable[[httpx.Request], httpx.Response]

BASE = "https://api.anthropic.test/v1"
MODEL = ModelSpec(
    name="claude-sonnet-4-5", input_per_mtok=3.0, output_per_mtok=15.0, max_output=8192
)
UNPRICED = ModelSpec(name="claude-x")

# Shaped like the message object in Anthropic's API reference.
MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}


def sse(*events: tuple[str, Any]) -> bytes:
    """Encode ``(event name, data)`` pairs as an Anthropic event stream."""
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
        for name, data in events
    )


def message_start(input_tokens: int = 25) -> tuple[str, Any]:
    """Return a message_start event."""
    return (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5-20250929",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        },
    )


def block_start(index: int, block: dict[str, Any]) -> tuple[str, Any]:
    """Return a content_block_start event."""
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_delta(index: int, text: str) -> tuple[str, Any]:
    """Return a text content_block_delta event."""
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )


def json_delta(index: int, partial: str) -> tuple[str, Any]:
    """Return an input_json_delta content_block_delta event."""
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial},
        },
    )


def block_stop(index: int) -> tuple[str, Any]:
    """Return a content_block_stop event."""
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str, output_tokens: int) -> tuple[str, Any]:
    """Return a message_delta event."""
    return (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


PING = ("ping", {"type": "ping"})
STOP = ("message_stop", {"type": "message_stop"})


def event_stream(body: bytes) -> httpx.Response:
    """Return a 200 event-stream response with ``body``."""
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


class Recorder:
    """A MockTransport handler that records requests and answers with a canned response."""

    def __init__(self, respond: Callable[[], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self._respond = respond

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self._respond()

    @property
    def json(self) -> Any:
        """Return the last request's decoded JSON body."""
        return msgspec.json.decode(self.requests[-1].content)


@pytest.fixture
def adapter() -> Iterator[Callable[..., WireAdapter]]:
    """Return a factory of Anthropic adapters over a MockTransport; closes their clients."""
    clients: list[httpx.Client] = []

    def make(
        handler: Handler, *, api_key: str | None = "sk-ant-test", **config: Any
    ) -> WireAdapter:
        client = httpx.Client(transport=httpx.MockTransport(handler))
        clients.append(client)
        cfg = ProviderConfig(
            name="anthropic", kind="anthropic", base_url=BASE, models=[MODEL], **config
        )
        return make_adapter(
            cfg, client=client, api_key=Secret(api_key) if api_key is not None else None
        )

    yield make
    for client in clients:
        client.close()


def req(**kwargs: Any) -> Request:
    """Return a request with one user message unless messages are given."""
    kwargs.setdefault("messages", [Message(role="user", content="Hello, Claude")])
    return Request(model="claude", request_id="rid-2", **kwargs)


def ok(body: Any = MESSAGE) -> Recorder:
    """Return a recorder answering 200 with ``body``."""
    return Recorder(lambda: httpx.Response(200, json=body))


def test_make_adapter_picks_anthropic(adapter: Callable[..., WireAdapter]) -> None:
    """``kind = "anthropic"`` gives an AnthropicAdapter that satisfies the protocol."""
    a = adapter(ok())
    assert isinstance(a, AnthropicAdapter)
    assert isinstance(a, WireAdapter)
    assert a.kind == "anthropic"


def test_minimal_payload_and_headers(adapter: Callable[..., WireAdapter]) -> None:
    """A plain request posts model, max_tokens and messages with key and version headers."""
    rec = ok()
    adapter(rec, anthropic_version="2023-06-01").complete(req(max_tokens=1024), MODEL)
    sent = rec.requests[-1]
    assert (sent.method, str(sent.url)) == ("POST", f"{BASE}/messages")
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert rec.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    }


def test_max_tokens_defaults(adapter: Callable[..., WireAdapter]) -> None:
    """max_tokens comes from the request, else the model's max_output, else 1024."""
    rec = ok()
    a = adapter(rec)
    a.complete(req(max_tokens=7), MODEL)
    assert rec.json["max_tokens"] == 7
    a.complete(req(), MODEL)
    assert rec.json["max_tokens"] == 8192
    a.complete(req(), UNPRICED)
    assert rec.json["max_tokens"] == 1024


def test_full_payload(adapter: Callable[..., WireAdapter]) -> None:
    """System, parts, images, tool use, tool results, tools and options map exactly."""
    rec = ok()
    request = req(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="system", content=[TextPart("Answer in English.")]),
            Message(
                role="user",
                content=[
                    TextPart("What is in these images?"),
                    ImagePart(url="https://example.com/cat.png"),
                    ImagePart(data="aGVsbG8=", media_type="image/jpeg"),
                    ImagePart(url="data:image/png;base64,iVBORw0K"),
                ],
            ),
            Message(
                role="assistant",
                content="Let me check.",
                tool_calls=[
                    ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Oslo"}'),
                    ToolCall(id="toolu_2", name="get_time", arguments=""),
                ],
            ),
            Message(role="tool", tool_call_id="toolu_1", content='{"temp": 3}'),
            Message(role="tool", tool_call_id="toolu_2", content="12:00"),
            Message(role="user", content="Thanks"),
        ],
        max_tokens=100,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\nHuman:"],
        tools=[
            Tool(
                name="get_weather",
                description="Current weather",
                parameters={"type": "object", "properties": {"city": {"type": "string"}}},
            ),
            Tool(name="get_time"),
        ],
        tool_choice="auto",
    )
    adapter(rec).complete(request, MODEL)
    assert rec.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images?"},
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.png"},
                    },
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": "aGVsbG8=",
                        },
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    },
                    {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"temp": 3}'},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "12:00"},
                ],
            },
            {"role": "user", "content": "Thanks"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["\n\nHuman:"],
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "auto"},
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("any", {"type": "any"}),
        ("required", {"type": "any"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
        ({"type": "tool", "name": "f"}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice(adapter: Callable[..., WireAdapter], choice: Any, wire: Any) -> None:
    """tool_choice accepts OpenAI's and Anthropic's spellings and sends Anthropic's."""
    rec = ok()
    adapter(rec).complete(req(tools=[Tool(name="f")], tool_choice=choice), MODEL)
    assert rec.json["tool_choice"] == wire


@pytest.mark.parametrize(
    "message",
    [
        Message(role="tool", content="x"),
        Message(role="assistant", tool_calls=[ToolCall(id="t", name="f", arguments="{nope")]),
        Message(role="assistant", tool_calls=[ToolCall(id="t", name="f", arguments="[1]")]),
        Message(role="user", content=[ImagePart(url="data:image/png,notbase64")]),
        Message(role="user", content=[ImagePart()]),
    ],
)
def test_inexpressible_request_is_bad_request(
    adapter: Callable[..., WireAdapter], message: Message
) -> None:
    """A request Anthropic cannot express is a BadRequest and nothing is sent."""
    rec = ok()
    with pytest.raises(BadRequest) as info:
        adapter(rec).complete(req(messages=[message]), MODEL)
    assert info.value.provider == "anthropic"
    assert rec.requests == []


def test_parse_message(adapter: Callable[..., WireAdapter]) -> None:
    """The documented message maps to content, model, usage, cost and finish reason."""
    resp = adapter(ok()).complete(req(), MODEL)
    assert resp.content == "Hi! My name is Claude."
    assert resp.provider == "anthropic"
    assert resp.model == "claude-sonnet-4-5"  # the configured name: usage is keyed by it
    assert resp.upstream_model == "claude-sonnet-4-5-20250929"
    assert resp.request_id == "rid-2"
    assert resp.usage == Usage(input_tokens=2095, output_tokens=503)
    assert resp.cost == pytest.approx((2095 * 3.0 + 503 * 15.0) / 1e6)
    assert resp.finish_reason == "stop"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "refusal"),
        ("pause_turn", "pause_turn"),
    ],
)
def test_stop_reasons(adapter: Callable[..., WireAdapter], stop_reason: str, finish: str) -> None:
    """Anthropic stop reasons are normalised; unknown ones pass through."""
    resp = adapter(ok({**MESSAGE, "stop_reason": stop_reason})).complete(req(), MODEL)
    assert resp.finish_reason == finish


def test_cached_prompt_tokens_count_as_input(adapter: Callable[..., WireAdapter]) -> None:
    """Cache read and write tokens are part of the prompt's input tokens."""
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
    }
    resp = adapter(ok({**MESSAGE, "usage": usage})).complete(req(), MODEL)
    assert resp.usage == Usage(
        input_tokens=1110, output_tokens=5, cached_input_tokens=1000, cache_write_tokens=100
    )


def test_unpriced_cost_is_none(adapter: Callable[..., WireAdapter]) -> None:
    """An unpriced model's cost is None, never 0."""
    assert adapter(ok()).complete(req(), UNPRICED).cost is None


def test_parse_tool_use(adapter: Callable[..., WireAdapter]) -> None:
    """tool_use blocks become tool calls with the input as JSON text; text blocks join."""
    body = {
        **MESSAGE,
        "content": [
            {"type": "text", "text": "I'll check. "},
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"location": "San Francisco, CA"},
            },
            {"type": "text", "text": "Done."},
        ],
        "stop_reason": "tool_use",
    }
    resp = adapter(ok(body)).complete(req(), MODEL)
    assert resp.content == "I'll check. Done."
    assert resp.tool_calls == [
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            name="get_weather",
            arguments='{"location":"San Francisco, CA"}',
        )
    ]
    assert resp.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502</html>",
        b'{"type": "message", "content": "not-a-list"}',
        b'{"type": "message", "content": [{"type": "tool_use", "input": {}}]}',
        b'{"content": [{"text": "no type"}]}',
        b'{"content": [], "usage": {"input_tokens": "many"}}',
        b'{"content": [{"type": "text", "text": "\xff"}]}',
    ],
)
def test_malformed_200_is_protocol_error(adapter: Callable[..., WireAdapter], body: bytes) -> None:
    """A 200 whose body is not a message is a ProtocolError."""
    with pytest.raises(ProtocolError) as info:
        adapter(Recorder(lambda: httpx.Response(200, content=body))).complete(req(), MODEL)
    assert info.value.request_id == "rid-2"


def test_stream(adapter: Callable[..., WireAdapter]) -> None:
    """The documented event sequence yields text deltas and a final chunk with usage."""
    body = sse(
        message_start(25),
        block_start(0, {"type": "text", "text": ""}),
        PING,
        text_delta(0, "Hello"),
        text_delta(0, "!"),
        block_stop(0),
        message_delta("end_turn", 15),
        STOP,
    )
    rec = Recorder(lambda: event_stream(body))
    chunks = list(adapter(rec).stream(req(stream=True, max_tokens=10), MODEL))
    assert rec.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
        "stream": True,
    }
    model = "claude-sonnet-4-5-20250929"
    assert chunks[:-1] == [
        StreamChunk(delta="Hello", provider="anthropic", model=model),
        StreamChunk(delta="!", provider="anthropic", model=model),
    ]
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage == Usage(input_tokens=25, output_tokens=15)
    assert last.cost == pytest.approx((25 * 3.0 + 15 * 15.0) / 1e6)


def test_stream_tool_use(adapter: Callable[..., WireAdapter]) -> None:
    """A streamed tool_use block yields ToolCallDeltas numbered by tool, not by block."""
    body = sse(
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Checking."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
        json_delta(1, ""),
        json_delta(1, '{"location": '),
        json_delta(1, '"Oslo"}'),
        block_stop(1),
        message_delta("tool_use", 40),
        STOP,
    )
    chunks = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    deltas = [d for c in chunks for d in (c.tool_calls or [])]
    assert deltas == [
        ToolCallDelta(index=0, id="toolu_1", name="get_weather"),
        ToolCallDelta(index=0, arguments='{"location": '),
        ToolCallDelta(index=0, arguments='"Oslo"}'),
    ]
    assert chunks[0].delta == "Checking."
    assert chunks[-1].finish_reason == "tool_calls"


def test_stream_without_event_names(adapter: Callable[..., WireAdapter]) -> None:
    """A stream whose events lack ``event:`` lines is read by the data's type."""
    events = [message_start(), text_delta(0, "Hi"), message_delta("end_turn", 1), STOP]
    body = b"".join(b"data: " + msgspec.json.encode(data) + b"\n\n" for _, data in events)
    chunks = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    assert [c.delta for c in chunks] == ["Hi", ""]
    assert chunks[-1].finish_reason == "stop"


def test_stream_truncated_is_interrupted(adapter: Callable[..., WireAdapter]) -> None:
    """A stream that stops without message_stop after a chunk raises StreamInterrupted."""
    body = sse(message_start(), text_delta(0, "Hel"), message_delta("end_turn", 2))
    stream = adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL)
    assert next(stream).delta == "Hel"
    with pytest.raises(StreamInterrupted):
        next(stream)


def test_stream_truncated_before_any_chunk(adapter: Callable[..., WireAdapter]) -> None:
    """A stream that stops before any chunk reached the caller may fail over."""
    body = sse(message_start(), PING)
    with pytest.raises(ProviderUnavailable) as info:
        list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    assert not isinstance(info.value, StreamInterrupted)


@pytest.mark.parametrize(
    ("etype", "error"),
    [
        ("overloaded_error", ProviderUnavailable),
        ("api_error", ProviderUnavailable),
        ("rate_limit_error", RateLimited),
        ("authentication_error", AuthenticationError),
        ("something_new", ProviderUnavailable),
    ],
)
def test_stream_error_event(
    adapter: Callable[..., WireAdapter], etype: str, error: type[Exception]
) -> None:
    """An error event mid-stream raises the error its type stands for."""
    body = sse(
        message_start(),
        text_delta(0, "Hi"),
        ("error", {"type": "error", "error": {"type": etype, "message": "Overloaded"}}),
    )
    stream = adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL)
    assert next(stream).delta == "Hi"
    with pytest.raises(error, match="Overloaded") as info:
        next(stream)
    assert type(info.value) is error
    assert info.value.provider == "anthropic"  # type: ignore[attr-defined]  # set on every error


def test_stream_json_delta_for_unknown_block(adapter: Callable[..., WireAdapter]) -> None:
    """Tool input for a block that never started as a client tool_use is skipped, not fatal."""
    body = sse(message_start(), json_delta(3, "{}"), STOP)
    chunks = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    assert [(c.delta, c.tool_calls) for c in chunks] == [("", None)]  # just the last chunk


def test_stream_malformed_event(adapter: Callable[..., WireAdapter]) -> None:
    """An event whose data is not the documented shape is a ProtocolError."""
    body = b"event: content_block_delta\ndata: [1, 2]\n\n"
    with pytest.raises(ProtocolError):
        list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))


def test_probe_gets_models_with_version(adapter: Callable[..., WireAdapter]) -> None:
    """The probe is a GET of /models with the key and version headers."""
    rec = Recorder(lambda: httpx.Response(200, json={"data": [], "has_more": False}))
    adapter(rec).probe()
    sent = rec.requests[-1]
    assert (sent.method, str(sent.url)) == ("GET", f"{BASE}/models")
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"


# --- issue 11: cache pricing and breakpoints, thinking, server tools, refusals -------------

CACHED = ModelSpec(
    name="claude-sonnet-4-5",
    input_per_mtok=3.0,
    output_per_mtok=15.0,
    cached_input_per_mtok=0.30,
    cache_write_per_mtok=3.75,
)


def sse_stream(*events: tuple[str, Any]) -> Recorder:
    """Return a recorder answering 200 with the events as a stream."""
    body = sse(*events)
    return Recorder(lambda: event_stream(body))


def test_cache_reads_and_writes_are_priced_at_their_rates(
    adapter: Callable[..., WireAdapter],
) -> None:
    """Cache reads cost the cached price, writes the write price, the rest the input price."""
    usage = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 8000,
        "output_tokens": 200,
    }
    resp = adapter(ok({**MESSAGE, "usage": usage})).complete(req(), CACHED)
    assert resp.usage == Usage(
        input_tokens=9050, output_tokens=200, cached_input_tokens=8000, cache_write_tokens=1000
    )
    assert resp.cost == pytest.approx((50 * 3.0 + 8000 * 0.30 + 1000 * 3.75 + 200 * 15.0) / 1e6)


def test_cache_prices_default_to_the_input_price() -> None:
    """A model without cache prices charges cached and written tokens as plain input."""
    usage = Usage(input_tokens=100, output_tokens=10, cached_input_tokens=60, cache_write_tokens=30)
    assert MODEL.cost(usage) == pytest.approx((100 * 3.0 + 10 * 15.0) / 1e6)


def test_cache_control_on_text_part_system_and_tool(adapter: Callable[..., WireAdapter]) -> None:
    """cache_control on a text part, a system part and a tool is sent as a breakpoint."""
    mark = {"type": "ephemeral"}
    rec = ok()
    request = req(
        messages=[
            Message(role="system", content=[TextPart("You are terse.", cache_control=mark)]),
            Message(role="system", content="Answer in French."),
            Message(role="user", content=[TextPart("Long document", cache_control=mark)]),
        ],
        tools=[Tool(name="lookup", cache_control=mark)],
    )
    adapter(rec).complete(request, MODEL)
    body = rec.json
    assert body["system"] == [
        {"type": "text", "text": "You are terse.", "cache_control": mark},
        {"type": "text", "text": "Answer in French."},
    ]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Long document", "cache_control": mark}],
        }
    ]
    assert body["tools"][0]["cache_control"] == mark


def test_system_without_breakpoint_stays_a_string(adapter: Callable[..., WireAdapter]) -> None:
    """With no cache_control, the system prompt is one string as before."""
    rec = ok()
    adapter(rec).complete(
        req(
            messages=[
                Message(role="system", content="Be terse."),
                Message(role="user", content="Hi"),
            ]
        ),
        MODEL,
    )
    assert rec.json["system"] == "Be terse."


def test_reasoning_effort_becomes_a_thinking_budget(adapter: Callable[..., WireAdapter]) -> None:
    """reasoning_effort turns thinking on with its budget added to max_tokens, no sampling."""
    rec = ok()
    adapter(rec).complete(req(max_tokens=500, temperature=0.2, reasoning_effort="low"), MODEL)
    body = rec.json
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 2548
    assert "temperature" not in body


def test_unknown_reasoning_effort_and_response_format_allow_failover(
    adapter: Callable[..., WireAdapter],
) -> None:
    """What Anthropic cannot express is UnsupportedByProvider, raised before sending."""
    rec = ok()
    a = adapter(rec)
    for request in (req(reasoning_effort="extreme"), req(response_format={"type": "json_object"})):
        with pytest.raises(UnsupportedByProvider) as info:
            a.complete(request, MODEL)
        assert info.value.failover and info.value.provider == "anthropic"
    assert rec.requests == []


def test_extra_body_is_merged_last_and_seed_left_out(adapter: Callable[..., WireAdapter]) -> None:
    """extra_body fields reach the wire (overriding ours); seed has no Anthropic field."""
    rec = ok()
    adapter(rec).complete(req(seed=3, extra_body={"max_tokens": 77, "top_k": 5}), MODEL)
    body = rec.json
    assert (body["max_tokens"], body["top_k"]) == (77, 5)
    assert "seed" not in body


def test_message_with_thinking_and_server_tool_blocks(adapter: Callable[..., WireAdapter]) -> None:
    """Thinking, server_tool_use and web_search_tool_result blocks are not the answer's text."""
    body = {
        **MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "Let me search.", "signature": "EqQBCgIYAhIM1g"},
            {
                "type": "server_tool_use",
                "id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
                "name": "web_search",
                "input": {"query": "claude shannon birth date"},
            },
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
                "content": [
                    {
                        "type": "web_search_result",
                        "title": "Claude Shannon - Wikipedia",
                        "url": "https://en.wikipedia.org/wiki/Claude_Shannon",
                        "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5",
                        "page_age": None,
                    }
                ],
            },
            {
                "type": "text",
                "text": "Claude Shannon was born on April 30, 1916.",
                "citations": [
                    {
                        "type": "web_search_result_location",
                        "cited_text": "born April 30",
                        "url": "https://en.wikipedia.org/wiki/Claude_Shannon",
                        "title": "Claude Shannon - Wikipedia",
                        "encrypted_index": "Eo8BCioIAhgBIiQ",
                    }
                ],
            },
        ],
        "usage": {
            "input_tokens": 6039,
            "output_tokens": 931,
            "server_tool_use": {"web_search_requests": 1},
        },
    }
    resp = adapter(ok(body)).complete(req(), MODEL)
    assert resp.content == "Claude Shannon was born on April 30, 1916."
    assert resp.tool_calls == []
    assert resp.usage == Usage(input_tokens=6039, output_tokens=931)


def test_stream_with_thinking_server_tools_and_client_tool(
    adapter: Callable[..., WireAdapter], caplog: pytest.LogCaptureFixture
) -> None:
    """Skipped blocks and deltas are counted at DEBUG; text and client tool calls assemble."""
    events = (
        message_start(),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Search it."},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "EqQBCgIY"},
            },
        ),
        block_stop(0),
        block_start(
            1,
            {
                "type": "server_tool_use",
                "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
                "name": "web_search",
                "input": {},
            },
        ),
        json_delta(1, '{"query": "weather '),
        json_delta(1, 'NYC today"}'),
        block_stop(1),
        block_start(
            2,
            {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
                "content": [
                    {
                        "type": "web_search_result",
                        "title": "Weather in NYC",
                        "url": "https://weather.example/nyc",
                        "encrypted_content": "Ev0DCioIAxgCIiQ",
                        "page_age": None,
                    }
                ],
            },
        ),
        block_stop(2),
        block_start(3, {"type": "text", "text": ""}),
        text_delta(3, "It is sunny. "),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 3,
                "delta": {
                    "type": "citations_delta",
                    "citation": {
                        "type": "web_search_result_location",
                        "cited_text": "sunny",
                        "url": "https://weather.example/nyc",
                        "title": "Weather",
                        "encrypted_index": "EpMBCioIAhgB",
                    },
                },
            },
        ),
        block_stop(3),
        block_start(
            4,
            {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_umbrella",
                "input": {},
            },
        ),
        json_delta(4, '{"size": '),
        json_delta(4, '"large"}'),
        block_stop(4),
        block_start(5, {"type": "brand_new_block", "whatever": 1}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 5,
                "delta": {"type": "brand_new_delta", "x": 2},
            },
        ),
        block_stop(5),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {
                    "input_tokens": 10682,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 510,
                    "server_tool_use": {"web_search_requests": 1},
                },
            },
        ),
        STOP,
    )
    with caplog.at_level("DEBUG", logger="routeledger.wire"):
        chunks = list(adapter(sse_stream(*events)).stream(req(), MODEL))
    assert "".join(c.delta for c in chunks) == "It is sunny. "
    deltas = [tc for c in chunks for tc in c.tool_calls or ()]
    assert deltas[0] == ToolCallDelta(
        index=0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_umbrella"
    )
    assert "".join(d.arguments for d in deltas) == '{"size": "large"}'
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage == Usage(input_tokens=10682, output_tokens=510)
    (record,) = [r for r in caplog.records if "skipped" in r.getMessage()]
    text = record.getMessage()
    assert "skipped 10 " in text
    for kind in (
        "thinking x1",
        "thinking_delta x1",
        "signature_delta x1",
        "server_tool_use x1",
        "input_json_delta x2",
        "web_search_tool_result x1",
        "citations_delta x1",
        "brand_new_block x1",
        "brand_new_delta x1",
    ):
        assert kind in text


def test_stream_cache_usage_from_message_start(adapter: Callable[..., WireAdapter]) -> None:
    """A stream's cache reads and writes (in message_start) reach the last chunk's usage."""
    start = message_start()
    start[1]["message"]["usage"] = {
        "input_tokens": 20,
        "cache_creation_input_tokens": 400,
        "cache_read_input_tokens": 3000,
        "output_tokens": 1,
    }
    events = (
        start,
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hi"),
        block_stop(0),
        message_delta("end_turn", 12),
        STOP,
    )
    chunks = list(adapter(sse_stream(*events)).stream(req(), CACHED))
    usage = chunks[-1].usage
    assert usage == Usage(
        input_tokens=3420, output_tokens=12, cached_input_tokens=3000, cache_write_tokens=400
    )
    assert chunks[-1].cost == CACHED.cost(usage)


def test_refusal_stop_reason(adapter: Callable[..., WireAdapter]) -> None:
    """stop_reason "refusal" is finish reason "refusal" with the model's words as refusal."""
    body = {
        **MESSAGE,
        "content": [{"type": "text", "text": "I can't help with that."}],
        "stop_reason": "refusal",
    }
    resp = adapter(ok(body)).complete(req(), MODEL)
    assert (resp.finish_reason, resp.refusal) == ("refusal", "I can't help with that.")
    chunks = list(
        adapter(sse_stream(message_start(), message_delta("refusal", 3), STOP)).stream(req(), MODEL)
    )
    assert chunks[-1].finish_reason == "refusal"


def test_overloaded_error_mid_stream(adapter: Callable[..., WireAdapter]) -> None:
    """Anthropic's documented overloaded_error event after a chunk interrupts the stream."""
    error = (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    events = (
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        text_delta(0, "Hel"),
        error,
    )
    stream = adapter(sse_stream(*events)).stream(req(), MODEL)
    assert next(iter(stream)).delta == "Hel"
    with pytest.raises(ProviderUnavailable):
        list(stream)


def test_not_found_error_json_allows_failover(adapter: Callable[..., WireAdapter]) -> None:
    """Anthropic's 404 not_found_error body (a model it does not serve) allows failover."""
    body = {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-9"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    a = adapter(Recorder(lambda: httpx.Response(404, json=body)))
    with pytest.raises(UnsupportedByProvider):
        a.complete(req(), MODEL)


def test_invalid_request_error_json_stays_final(adapter: Callable[..., WireAdapter]) -> None:
    """Anthropic's 400 invalid_request_error about the messages is a final BadRequest."""
    body = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": 'messages: roles must alternate between "user" and "assistant"',
        },
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    a = adapter(Recorder(lambda: httpx.Response(400, json=body)))
    with pytest.raises(BadRequest) as info:
        a.complete(req(), MODEL)
    assert type(info.value) is BadRequest
