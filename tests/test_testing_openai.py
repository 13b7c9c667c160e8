"""Tests of the fake provider's OpenAI format (routeledger.testing._openai), over loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fake_support import (
    OPENAI_BODY,
    openai_stream,
)

from routeledger.testing import FakeProvider


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(seed=1) as provider:
        yield provider


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url + "/v1", timeout=10) as c:
        yield c


def test_openai_json_response(client: httpx.Client) -> None:
    """A chat completion is answered in the OpenAI shape with the request's model and usage."""
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-test"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 8
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert r.headers["x-request-id"].startswith("req_")


def test_openai_stream_with_usage(client: httpx.Client, fake: FakeProvider) -> None:
    """An OpenAI stream sends a role chunk, text chunks, a finish chunk, a usage chunk, [DONE]."""
    data = openai_stream(client, stream_options={"include_usage": True})
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert len(texts) == 8
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert all(c["usage"] is None for c in chunks[:-1])
    whole = client.post("/chat/completions", json=OPENAI_BODY).json()
    assert "".join(texts) == whole["choices"][0]["message"]["content"]
    assert fake.stats.last_request_json == OPENAI_BODY


def test_openai_stream_without_usage(client: httpx.Client) -> None:
    """Without stream_options.include_usage the OpenAI stream has no usage chunk at all."""
    data = openai_stream(client)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + 8 + 1
    assert all("usage" not in c and c["choices"] for c in chunks)
