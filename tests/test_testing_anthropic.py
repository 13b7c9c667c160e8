"""Tests of the fake provider's Anthropic format (routeledger.testing._anthropic), over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fake_support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    anthropic_stream,
)

from routeledger.testing import Behaviour, FakeProvider


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(seed=1) as provider:
        yield provider


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url + "/v1", timeout=10) as c:
        yield c


def test_anthropic_json_response(client: httpx.Client) -> None:
    """A message is answered in the Anthropic shape with the request's model and usage."""
    r = client.post("/messages", json=ANTHROPIC_BODY)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-test"
    assert body["content"][0]["type"] == "text"
    assert len(body["content"][0]["text"].split()) == 8
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] == 3
    assert body["usage"]["output_tokens"] == 8
    assert r.headers["request-id"].startswith("req_")


def test_anthropic_stream_event_sequence(client: httpx.Client) -> None:
    """An Anthropic stream sends the full message_start ... message_stop event sequence."""
    events = anthropic_stream(client)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 8,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    assert payloads[0]["message"]["model"] == "claude-test"
    assert payloads[0]["message"]["usage"]["input_tokens"] == 3
    text = "".join(p["delta"]["text"] for p in payloads[3:11])
    assert len(text.split()) == 8
    assert payloads[-2]["delta"]["stop_reason"] == "end_turn"
    assert payloads[-2]["usage"]["output_tokens"] == 8


def test_overloaded_529_anthropic(fake: FakeProvider, client: httpx.Client) -> None:
    """A 529 is an overloaded_error for Anthropic and a server_error for OpenAI."""
    fake.set_behaviour(Behaviour(status=529))
    r = client.post("/messages", json=ANTHROPIC_BODY)
    assert (r.status_code, r.json()["error"]["type"]) == (529, "overloaded_error")
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert (r.status_code, r.json()["error"]["type"]) == (529, "server_error")
