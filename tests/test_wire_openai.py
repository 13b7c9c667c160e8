"""Tests of the OpenAI chat completions adapter against exact wire payloads."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from routeledger.actors.wire import OpenAIAdapter, WireAdapter, make_adapter
from routeledger.events import (
    BadRequest,
    ImagePart,
    Message,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderUnavailable,
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

BASE = "https://api.openai.test/v1"
MODEL = ModelSpec(name="gpt-4o-mini", input_per_mtok=0.15, output_per_mtok=0.60)
UNPRICED = ModelSpec(name="local-llama")

# Shaped like the chat completion object in OpenAI's API reference.
COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "\n\nHello there, how may I assist you?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
}


def sse(*events: Any, done: bool = True) -> bytes:
    """Encode chat.completion.chunk objects as an OpenAI event stream."""
    out = b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """Return one chat.completion.chunk with a single choice."""
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


USAGE_CHUNK = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1694268190,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


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
    """Return a factory of OpenAI adapters over a MockTransport; closes their clients."""
    clients: list[httpx.Client] = []

    def make(handler: Handler, *, api_key: str | None = "sk-test", **config: Any) -> WireAdapter:
        client = httpx.Client(transport=httpx.MockTransport(handler))
        clients.append(client)
        cfg = ProviderConfig(name="openai", kind="openai", base_url=BASE, models=[MODEL], **config)
        return make_adapter(
            cfg, client=client, api_key=Secret(api_key) if api_key is not None else None
        )

    yield make
    for client in clients:
        client.close()


def req(**kwargs: Any) -> Request:
    """Return a request with one user message unless messages are given."""
    kwargs.setdefault("messages", [Message(role="user", content="Hello!")])
    return Request(model="gpt-4o-mini", request_id="rid-1", **kwargs)


def test_make_adapter_picks_openai(adapter: Callable[..., WireAdapter]) -> None:
    """``kind = "openai"`` gives an OpenAIAdapter that satisfies the protocol."""
    a = adapter(Recorder(lambda: httpx.Response(200, json=COMPLETION)))
    assert isinstance(a, OpenAIAdapter)
    assert isinstance(a, WireAdapter)
    assert a.kind == "openai"


def test_minimal_payload_and_headers(adapter: Callable[..., WireAdapter]) -> None:
    """A plain request posts exactly model and messages, with the bearer key."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    adapter(rec, headers={"OpenAI-Organization": "org-1"}).complete(req(), MODEL)
    sent = rec.requests[-1]
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE}/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["openai-organization"] == "org-1"
    assert rec.json == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}


def test_no_key_no_auth_header(adapter: Callable[..., WireAdapter]) -> None:
    """Without a key no Authorization header is sent (local compatible servers)."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    adapter(rec, api_key=None).complete(req(), MODEL)
    assert "authorization" not in rec.requests[-1].headers


def test_full_payload(adapter: Callable[..., WireAdapter]) -> None:
    """Parts, images, tool calls, tool results, tools and sampling options map exactly."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    request = req(
        messages=[
            Message(role="system", content="Be brief."),
            Message(
                role="user",
                content=[
                    TextPart("What is in these images?"),
                    ImagePart(url="https://example.com/cat.png"),
                    ImagePart(data="aGVsbG8=", media_type="image/jpeg"),
                ],
            ),
            Message(
                role="assistant",
                tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city":"Oslo"}')],
            ),
            Message(role="tool", tool_call_id="call_1", content='{"temp": 3}'),
            Message(role="user", content="Thanks", name="ann"),
        ],
        max_tokens=100,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],
        tools=[
            Tool(
                name="get_weather",
                description="Current weather",
                parameters={"type": "object", "properties": {"city": {"type": "string"}}},
            ),
            Tool(name="noop"),
        ],
        tool_choice="auto",
    )
    adapter(rec).complete(request, MODEL)
    assert rec.json == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,aGVsbG8="}},
                ],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"temp": 3}', "tool_call_id": "call_1"},
            {"role": "user", "content": "Thanks", "name": "ann"},
        ],
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            },
            {"type": "function", "function": {"name": "noop"}},
        ],
        "tool_choice": "auto",
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("none", "none"),
        ("required", "required"),
        ("any", "required"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "f"}},
        ),
    ],
)
def test_tool_choice(adapter: Callable[..., WireAdapter], choice: Any, wire: Any) -> None:
    """tool_choice accepts OpenAI's and Anthropic's spellings and sends OpenAI's."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    adapter(rec).complete(req(tools=[Tool(name="f")], tool_choice=choice), MODEL)
    assert rec.json["tool_choice"] == wire


def test_image_without_source_is_bad_request(adapter: Callable[..., WireAdapter]) -> None:
    """An image with neither URL nor typed data is rejected before anything is sent."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    bad = req(messages=[Message(role="user", content=[ImagePart(data="abc")])])
    with pytest.raises(BadRequest) as info:
        adapter(rec).complete(bad, MODEL)
    assert info.value.provider == "openai"
    assert rec.requests == []


def test_parse_completion(adapter: Callable[..., WireAdapter]) -> None:
    """The documented completion maps to content, model, usage, cost and finish reason."""
    resp = adapter(Recorder(lambda: httpx.Response(200, json=COMPLETION))).complete(req(), MODEL)
    assert resp.content == "\n\nHello there, how may I assist you?"
    assert resp.provider == "openai"
    assert resp.model == "gpt-4o-mini"  # the configured name: usage is keyed by it
    assert resp.upstream_model == "gpt-4o-mini-2024-07-18"
    assert resp.request_id == "rid-1"
    assert resp.usage == Usage(input_tokens=9, output_tokens=12)
    assert resp.cost == pytest.approx((9 * 0.15 + 12 * 0.60) / 1e6)
    assert resp.finish_reason == "stop"
    assert resp.tool_calls == []
    assert resp.latency_ms == 0.0
    assert resp.attempts == 1


def test_unpriced_or_no_usage_cost_is_none(adapter: Callable[..., WireAdapter]) -> None:
    """Cost is None, never 0, for an unpriced model or a missing usage."""
    a = adapter(Recorder(lambda: httpx.Response(200, json=COMPLETION)))
    assert a.complete(req(), UNPRICED).cost is None
    no_usage = {k: v for k, v in COMPLETION.items() if k not in ("usage", "model")}
    b = adapter(Recorder(lambda: httpx.Response(200, json=no_usage)))
    resp = b.complete(req(), MODEL)
    assert resp.usage is None
    assert resp.cost is None
    assert resp.model == "gpt-4o-mini"
    assert resp.upstream_model is None


def test_parse_tool_calls(adapter: Callable[..., WireAdapter]) -> None:
    """Tool calls come back with id, name and argument text; finish reason tool_calls."""
    body = {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    resp = adapter(Recorder(lambda: httpx.Response(200, json=body))).complete(req(), MODEL)
    assert resp.content == ""
    assert resp.tool_calls == [
        ToolCall(id="call_abc", name="get_weather", arguments='{"city":"Oslo"}')
    ]
    assert resp.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"object": "unexpected", "choices": "not-a-list"}',
        b'{"choices": []}',
        b'{"choices": [{"message": {"content": 42}}]}',
        b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": -1}}',
        b'{"choices": [{"message": {"content": "\xc3\x28\xff"}}]}',
        b"",
    ],
)
def test_malformed_200_is_protocol_error(adapter: Callable[..., WireAdapter], body: bytes) -> None:
    """A 200 whose body is not a chat completion is a ProtocolError."""
    a = adapter(Recorder(lambda: httpx.Response(200, content=body)))
    with pytest.raises(ProtocolError) as info:
        a.complete(req(), MODEL)
    assert info.value.provider == "openai"
    assert info.value.request_id == "rid-1"


def test_error_object_in_200_is_mapped(adapter: Callable[..., WireAdapter]) -> None:
    """A compatible server's 200 carrying an error object maps like the error it names."""
    body = {"error": {"message": "Server overloaded", "type": "server_error", "code": None}}
    a = adapter(Recorder(lambda: httpx.Response(200, json=body)))
    with pytest.raises(ProviderUnavailable, match="Server overloaded"):
        a.complete(req(), MODEL)


def test_stream_payload_and_chunks(adapter: Callable[..., WireAdapter]) -> None:
    """A stream asks for usage, yields text deltas, and ends with finish, usage and cost."""
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello"}),
        chunk({"content": " world"}),
        chunk({}, "stop"),
        USAGE_CHUNK,
    )
    rec = Recorder(lambda: event_stream(body))
    chunks = list(adapter(rec).stream(req(stream=True, max_tokens=5), MODEL))
    assert rec.json == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    model = "gpt-4o-mini-2024-07-18"
    assert chunks[:-1] == [
        StreamChunk(delta="Hello", provider="openai", model=model),
        StreamChunk(delta=" world", provider="openai", model=model),
    ]
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage == Usage(input_tokens=9, output_tokens=2)
    assert last.cost == pytest.approx((9 * 0.15 + 2 * 0.60) / 1e6)
    assert last.provider == "openai"


def test_stream_without_usage_chunk(adapter: Callable[..., WireAdapter]) -> None:
    """A server that ignores include_usage still ends the stream; usage and cost are None."""
    body = sse(chunk({"content": "Hi"}), chunk({}, "length"))
    last = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))[-1]
    assert last.finish_reason == "length"
    assert last.usage is None
    assert last.cost is None


def test_stream_tool_call_deltas(adapter: Callable[..., WireAdapter]) -> None:
    """Streamed tool-call fragments come through as ToolCallDelta with their index."""
    body = sse(
        chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
    )
    chunks = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    deltas = [d for c in chunks for d in (c.tool_calls or [])]
    assert deltas == [
        ToolCallDelta(index=0, id="call_1", name="get_weather", arguments=""),
        ToolCallDelta(index=0, arguments='{"city":'),
        ToolCallDelta(index=0, arguments='"Oslo"}'),
    ]
    assert chunks[-1].finish_reason == "tool_calls"


def test_stream_truncated_after_chunk_is_interrupted(adapter: Callable[..., WireAdapter]) -> None:
    """A stream that stops without [DONE] after a chunk raises StreamInterrupted."""
    body = sse(chunk({"content": "Hel"}), done=False)
    stream = adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL)
    assert next(stream).delta == "Hel"
    with pytest.raises(StreamInterrupted):
        next(stream)


def test_stream_truncated_even_after_finish(adapter: Callable[..., WireAdapter]) -> None:
    """Without [DONE] the stream is broken even if a finish reason and usage came."""
    body = sse(chunk({"content": "Hi"}), chunk({}, "stop"), USAGE_CHUNK, done=False)
    with pytest.raises(StreamInterrupted):
        list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))


def test_stream_empty_is_unavailable_not_interrupted(adapter: Callable[..., WireAdapter]) -> None:
    """A stream that ends before any chunk reached the caller may fail over."""
    body = sse(chunk({"role": "assistant", "content": ""}), done=False)
    with pytest.raises(ProviderUnavailable) as info:
        list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    assert not isinstance(info.value, StreamInterrupted)
    assert info.value.failover


def test_stream_error_object_mid_stream(adapter: Callable[..., WireAdapter]) -> None:
    """An error object inside the stream raises the error it names."""
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    body = sse(chunk({"content": "Hi"}), error, done=False)
    stream = adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL)
    assert next(stream).delta == "Hi"
    with pytest.raises(ProviderUnavailable, match="The server had an error"):
        next(stream)


def test_stream_wrong_content_type(adapter: Callable[..., WireAdapter]) -> None:
    """A 200 that is neither an event stream nor JSON is a ProtocolError before any chunk."""
    a = adapter(Recorder(lambda: httpx.Response(200, text="<html></html>")))
    with pytest.raises(ProtocolError):
        next(iter(a.stream(req(), MODEL)))


def test_stream_wrong_json_event(adapter: Callable[..., WireAdapter]) -> None:
    """An event whose data is not a chunk object is a ProtocolError."""
    body = b"data: [1, 2, 3]\n\ndata: [DONE]\n\n"
    with pytest.raises(ProtocolError):
        list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))


class TrackingStream(httpx.SyncByteStream):
    """A response body that records whether it was closed."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts

    def close(self) -> None:
        self.closed = True


def test_closing_stream_closes_response(adapter: Callable[..., WireAdapter]) -> None:
    """Closing the generator early closes the HTTP response."""
    body = TrackingStream([sse(chunk({"content": "a"}), chunk({"content": "b"}))])
    a = adapter(
        lambda r: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})
    )
    stream = a.stream(req(), MODEL)
    assert next(stream).delta == "a"
    assert not body.closed
    assert isinstance(stream, types.GeneratorType)
    stream.close()
    assert body.closed


def test_finished_stream_closes_response(adapter: Callable[..., WireAdapter]) -> None:
    """A stream read to its end closes the HTTP response."""
    body = TrackingStream([sse(chunk({"content": "a"}), chunk({}, "stop"))])
    a = adapter(
        lambda r: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})
    )
    assert [c.delta for c in a.stream(req(), MODEL)] == ["a", ""]
    assert body.closed


def test_stream_split_into_tiny_network_chunks(adapter: Callable[..., WireAdapter]) -> None:
    """Events split across arbitrary network chunks parse the same."""
    whole = sse(chunk({"content": "héllo"}), chunk({}, "stop"), USAGE_CHUNK)
    body = TrackingStream([whole[i : i + 3] for i in range(0, len(whole), 3)])
    a = adapter(
        lambda r: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})
    )
    chunks = list(a.stream(req(), MODEL))
    assert [c.delta for c in chunks] == ["héllo", ""]
    assert chunks[-1].usage == Usage(input_tokens=9, output_tokens=2)


def test_probe_gets_models(adapter: Callable[..., WireAdapter]) -> None:
    """The probe is a GET of /models with the key, never a completion."""
    rec = Recorder(lambda: httpx.Response(200, json={"object": "list", "data": []}))
    adapter(rec).probe(timeout_s=2.0)
    sent = rec.requests[-1]
    assert (sent.method, str(sent.url)) == ("GET", f"{BASE}/models")
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.content == b""


# --- issue 11: reasoning models, cached and reasoning usage, refusals, pass-through ---------

REASONING = ModelSpec(
    name="o4-mini",
    reasoning=True,
    input_per_mtok=1.10,
    output_per_mtok=4.40,
    cached_input_per_mtok=0.275,
)

# The usage object of OpenAI's chat completion reference, with both detail objects.
DETAILED_USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 192,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}

# A structured-outputs refusal as OpenAI documents it: content null, refusal text, "stop".
REFUSAL = {
    **COMPLETION,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": "I'm sorry, I cannot assist with that request.",
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
}


@pytest.mark.parametrize(
    ("name", "base_url", "expected"),
    [
        ("o1", "https://api.openai.com/v1", True),
        ("o3-mini", "https://api.openai.com/v1", True),
        ("o4-mini-2025-04-16", "https://api.openai.com/v1", True),
        ("gpt-5", "https://api.openai.com/v1", True),
        ("gpt-5-mini", "https://api.openai.com/v1", True),
        ("gpt-5-chat-latest", "https://api.openai.com/v1", False),
        ("gpt-4o-mini", "https://api.openai.com/v1", False),
        ("omni-moderation-latest", "https://api.openai.com/v1", False),
        ("o3-mini", "http://127.0.0.1:4000/v1", False),
    ],
)
def test_reasoning_defaults_to_openai_reasoning_names(
    name: str, base_url: str, expected: bool
) -> None:
    """Unset, ``reasoning`` is true only for o-series and GPT-5 ids on api.openai.com."""
    assert ModelSpec(name=name).is_reasoning(base_url) is expected
    assert ModelSpec(name=name, reasoning=not expected).is_reasoning(base_url) is not expected


def test_reasoning_model_gets_max_completion_tokens_and_no_sampling(
    adapter: Callable[..., WireAdapter],
) -> None:
    """A reasoning model is sent max_completion_tokens and reasoning_effort, never sampling."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    request = req(max_tokens=64, temperature=0.3, top_p=0.9, reasoning_effort="low")
    adapter(rec).complete(request, REASONING)
    assert rec.json == {
        "model": "o4-mini",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_completion_tokens": 64,
        "reasoning_effort": "low",
    }


def test_ordinary_model_keeps_max_tokens_and_sampling(
    adapter: Callable[..., WireAdapter],
) -> None:
    """A model that is not a reasoning model still gets max_tokens, temperature and top_p."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    adapter(rec).complete(req(max_tokens=64, temperature=0.3, top_p=0.9), MODEL)
    body = rec.json
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (64, 0.3, 0.9)
    assert "max_completion_tokens" not in body


def test_response_format_seed_and_extra_body_are_passed_through_extra_last(
    adapter: Callable[..., WireAdapter],
) -> None:
    """response_format and seed are sent; extra_body is merged last and may override."""
    rec = Recorder(lambda: httpx.Response(200, json=COMPLETION))
    request = req(
        response_format={"type": "json_object"},
        seed=7,
        extra_body={"service_tier": "flex", "model": "gpt-4o-mini-2024-07-18"},
    )
    adapter(rec).complete(request, MODEL)
    body = rec.json
    assert body["response_format"] == {"type": "json_object"}
    assert body["seed"] == 7
    assert body["service_tier"] == "flex"
    assert body["model"] == "gpt-4o-mini-2024-07-18"  # overridden, as documented
    assert list(body)[-1] == "service_tier"


def test_cached_and_reasoning_tokens_are_read_and_priced(
    adapter: Callable[..., WireAdapter],
) -> None:
    """prompt/completion token details become cached and reasoning counts; cost uses them."""
    body = {**COMPLETION, "usage": DETAILED_USAGE}
    resp = adapter(Recorder(lambda: httpx.Response(200, json=body))).complete(req(), REASONING)
    assert resp.usage == Usage(
        input_tokens=2006, output_tokens=300, cached_input_tokens=1920, reasoning_tokens=192
    )
    expected = ((2006 - 1920) * 1.10 + 1920 * 0.275 + 300 * 4.40) / 1e6
    assert resp.cost == pytest.approx(expected)


def test_refusal_is_kept_with_finish_reason_refusal(adapter: Callable[..., WireAdapter]) -> None:
    """message.refusal becomes Response.refusal and finish reason "refusal", not success."""
    resp = adapter(Recorder(lambda: httpx.Response(200, json=REFUSAL))).complete(req(), MODEL)
    assert resp.refusal == "I'm sorry, I cannot assist with that request."
    assert resp.finish_reason == "refusal"
    assert resp.content == ""


def test_stream_refusal_deltas_and_finish_reason(adapter: Callable[..., WireAdapter]) -> None:
    """Refusal deltas reach the caller as chunk.refusal; the last chunk says "refusal"."""
    body = sse(
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I'm sorry, "}),
        chunk({"refusal": "I cannot help."}),
        chunk({}, "stop"),
        USAGE_CHUNK,
    )
    chunks = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    assert [c.refusal for c in chunks] == ["I'm sorry, ", "I cannot help.", None]
    assert chunks[-1].finish_reason == "refusal"


def test_stream_usage_chunk_with_details(adapter: Callable[..., WireAdapter]) -> None:
    """The include_usage chunk's token details reach the last chunk's usage and cost."""
    usage_chunk = {**USAGE_CHUNK, "usage": DETAILED_USAGE}
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hi"}),
        chunk({}, "stop"),
        usage_chunk,
    )
    chunks = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), REASONING))
    last = chunks[-1]
    assert last.usage == Usage(
        input_tokens=2006, output_tokens=300, cached_input_tokens=1920, reasoning_tokens=192
    )
    assert last.cost == REASONING.cost(last.usage)


def test_stream_tool_call_deltas_as_documented(adapter: Callable[..., WireAdapter]) -> None:
    """Tool-call deltas (id and name first, then argument fragments) join by index."""
    body = sse(
        chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"loc'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ation": "Paris"}'}}]}),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
    )
    chunks = list(adapter(Recorder(lambda: event_stream(body))).stream(req(), MODEL))
    deltas = [tc for c in chunks for tc in c.tool_calls or ()]
    assert deltas[0] == ToolCallDelta(index=0, id="call_abc", name="get_weather", arguments="")
    assert "".join(d.arguments for d in deltas) == '{"location": "Paris"}'
    assert chunks[-1].finish_reason == "tool_calls"


def test_stream_answered_with_json_is_one_chunk(adapter: Callable[..., WireAdapter]) -> None:
    """A server that ignores "stream" and answers JSON gives one last chunk, not an error."""
    a = adapter(Recorder(lambda: httpx.Response(200, json=COMPLETION)))
    chunks = list(a.stream(req(), MODEL))
    assert len(chunks) == 1
    (only,) = chunks
    assert only.delta == "\n\nHello there, how may I assist you?"
    assert only.finish_reason == "stop"
    assert only.usage == Usage(input_tokens=9, output_tokens=12)
    assert only.cost == MODEL.cost(only.usage)


def test_unsupported_parameter_400_allows_failover(adapter: Callable[..., WireAdapter]) -> None:
    """OpenAI's 400 unsupported_parameter is UnsupportedByProvider: failover, no retry."""
    error = {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    a = adapter(Recorder(lambda: httpx.Response(400, json=error)))
    with pytest.raises(UnsupportedByProvider) as info:
        a.complete(req(max_tokens=5), MODEL)
    assert info.value.failover and not info.value.retryable


def test_malformed_messages_400_stays_final(adapter: Callable[..., WireAdapter]) -> None:
    """A 400 about the messages themselves is a plain BadRequest: no provider will take it."""
    error = {
        "error": {
            "message": "Invalid value for 'content': expected a string, got null.",
            "type": "invalid_request_error",
            "param": "messages.[0].content",
            "code": None,
        }
    }
    a = adapter(Recorder(lambda: httpx.Response(400, json=error)))
    with pytest.raises(BadRequest) as info:
        a.complete(req(), MODEL)
    assert type(info.value) is BadRequest and not info.value.failover
