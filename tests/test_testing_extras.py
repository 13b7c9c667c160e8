"""Tests of what the fake provider adds for real-provider details: tool calls, refusals,
cache and reasoning usage, server-tool blocks, reasoning-model refusals, its models listing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import httpx
import msgspec
import pytest
from fake_support import ANTHROPIC_BODY, OPENAI_BODY, sse_events

from routeledger.testing import Behaviour, FakeProvider


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(seed=1) as provider:
        yield provider


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url + "/v1", timeout=10) as c:
        yield c


def _stream(client: httpx.Client, path: str, body: dict[str, Any]) -> list[tuple[str | None, Any]]:
    r = client.post(path, json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    return [(name, json.loads(data)) for name, data in sse_events(r.text) if data != "[DONE]"]


# The models of the official SDKs, transcribed field for field (required fields and types):
# openai-python src/openai/types/model.py, anthropic-sdk-python src/anthropic/types/
# model_info.py, and the list pages each client reads (``data``; Anthropic's cursor fields).
class OpenAIModel(msgspec.Struct):
    id: str
    created: int
    object: str
    owned_by: str


class OpenAIPage(msgspec.Struct):
    data: list[OpenAIModel]
    object: str


class AnthropicModelInfo(msgspec.Struct):
    id: str
    created_at: datetime
    display_name: str
    lifecycle: Literal["active", "deprecated", "retired"]
    type: Literal["model"]
    deprecated_at: datetime | None = None
    retires_at: datetime | None = None
    max_input_tokens: int | None = None
    max_tokens: int | None = None


class AnthropicPage(msgspec.Struct):
    data: list[AnthropicModelInfo]
    has_more: bool
    first_id: str | None
    last_id: str | None


def test_models_listing_validates_against_both_sdk_model_types(
    fake: FakeProvider, client: httpx.Client
) -> None:
    """GET /v1/models (list and one) decodes as both SDKs' model types, strictly typed."""
    fake.set_behaviour(Behaviour(models=["m-1", "m-2"]))
    body = client.get("/models").content
    assert [m.id for m in msgspec.json.decode(body, type=OpenAIPage).data] == ["m-1", "m-2"]
    page = msgspec.json.decode(body, type=AnthropicPage)
    assert [m.lifecycle for m in page.data] == ["active", "active"]
    assert page.data[0].created_at.tzinfo is not None
    one = client.get("/models/m-2").content
    assert msgspec.json.decode(one, type=OpenAIModel).id == "m-2"
    assert msgspec.json.decode(one, type=AnthropicModelInfo).display_name == "m-2"


def test_openai_tool_call_answer_and_deltas(fake: FakeProvider, client: httpx.Client) -> None:
    """A tool call is a tool_calls entry (finish tool_calls), and deltas in a stream."""
    fake.set_behaviour(Behaviour(tool_call="get_weather", tool_arguments='{"city": "Paris"}'))
    choice = client.post("/chat/completions", json=OPENAI_BODY).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    events = [data for _, data in _stream(client, "/chat/completions", OPENAI_BODY)]
    deltas = [tc for e in events for c in e["choices"] for tc in c["delta"].get("tool_calls", [])]
    assert deltas[0]["function"]["name"] == "get_weather"
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"city": "Paris"}'
    assert [c["finish_reason"] for e in events for c in e["choices"]][-1] == "tool_calls"


def test_openai_refusal_answer_and_deltas(fake: FakeProvider, client: httpx.Client) -> None:
    """A refusal is message.refusal with no content, and refusal deltas in a stream."""
    fake.set_behaviour(Behaviour(refusal="I can't help with that."))
    message = client.post("/chat/completions", json=OPENAI_BODY).json()["choices"][0]["message"]
    assert (message["content"], message["refusal"]) == (None, "I can't help with that.")
    events = [data for _, data in _stream(client, "/chat/completions", OPENAI_BODY)]
    parts = [c["delta"].get("refusal") or "" for e in events for c in e["choices"]]
    assert "".join(parts) == "I can't help with that."
    assert not any(c["delta"].get("content") for e in events for c in e["choices"])


def test_openai_cached_and_reasoning_usage(fake: FakeProvider, client: httpx.Client) -> None:
    """Cached and reasoning counts are reported in the token details and in the totals."""
    fake.set_behaviour(Behaviour(output_tokens=4, cached_input_tokens=100, reasoning_tokens=30))
    usage = client.post("/chat/completions", json=OPENAI_BODY).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 100
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 30
    assert usage["completion_tokens"] == 34
    assert usage["prompt_tokens"] >= 100


def test_anthropic_cache_usage_and_server_tool_blocks(
    fake: FakeProvider, client: httpx.Client
) -> None:
    """Cache reads and writes are apart from input; server tool blocks precede the text."""
    fake.set_behaviour(Behaviour(server_tools=True, cached_input_tokens=500, cache_write_tokens=40))
    message = client.post("/messages", json=ANTHROPIC_BODY).json()
    assert [b["type"] for b in message["content"]] == [
        "thinking", "server_tool_use", "web_search_tool_result", "text",
    ]  # fmt: skip
    usage = message["usage"]
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (500, 40)
    events = _stream(client, "/messages", ANTHROPIC_BODY)
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "server_tool_use", "web_search_tool_result", "text"]
    kinds = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert {"thinking_delta", "signature_delta", "input_json_delta", "text_delta"} <= set(kinds)
    (start,) = [d for n, d in events if n == "message_start"]
    assert start["message"]["usage"]["cache_read_input_tokens"] == 500


def test_anthropic_tool_use_and_refusal(fake: FakeProvider, client: httpx.Client) -> None:
    """A tool call is a tool_use block (stop tool_use); a refusal is stop_reason refusal."""
    fake.set_behaviour(Behaviour(tool_call="lookup", tool_arguments='{"q": 1}'))
    message = client.post("/messages", json=ANTHROPIC_BODY).json()
    assert message["stop_reason"] == "tool_use"
    assert message["content"][-1] == {
        "type": "tool_use", "id": message["content"][-1]["id"], "name": "lookup", "input": {"q": 1},
    }  # fmt: skip
    events = _stream(client, "/messages", ANTHROPIC_BODY)
    partial = [d["delta"].get("partial_json", "") for n, d in events if n == "content_block_delta"]
    assert "".join(partial).endswith('{"q": 1}')
    fake.set_behaviour(Behaviour(refusal="No."))
    message = client.post("/messages", json=ANTHROPIC_BODY).json()
    assert (message["stop_reason"], message["content"][0]["text"]) == ("refusal", "No.")


def test_reasoning_model_refuses_max_tokens_and_sampling(
    fake: FakeProvider, client: httpx.Client
) -> None:
    """A model marked reasoning refuses max_tokens and temperature as OpenAI's do (400)."""
    fake.set_behaviour(Behaviour(reasoning_models=["gpt-test"]))
    r = client.post("/chat/completions", json={**OPENAI_BODY, "max_tokens": 5})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_parameter"
    r = client.post("/chat/completions", json={**OPENAI_BODY, "temperature": 0.5})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "unsupported_value")
    r = client.post("/chat/completions", json={**OPENAI_BODY, "max_completion_tokens": 5})
    assert r.status_code == 200


def test_ignore_stream_answers_json(fake: FakeProvider, client: httpx.Client) -> None:
    """ignore_stream answers a stream request with the whole JSON answer."""
    fake.set_behaviour(Behaviour(ignore_stream=True))
    r = client.post("/chat/completions", json={**OPENAI_BODY, "stream": True})
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["object"] == "chat.completion"


def test_behaviour_rejects_bad_extras() -> None:
    """Negative counts and tool arguments that are not a JSON object are refused."""
    with pytest.raises(ValueError, match="cached_input_tokens"):
        Behaviour(cached_input_tokens=-1)
    with pytest.raises(ValueError, match="tool_arguments"):
        Behaviour(tool_call="f", tool_arguments="[1]")
