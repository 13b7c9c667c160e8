"""Tests of the fake provider's Behaviour, error codes and reply text (testing._behaviour)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fake_support import (
    ANTHROPIC_BODY,
    OPENAI_BODY,
    openai_stream,
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


def test_behaviour_rejects_unknown_modes() -> None:
    """Behaviour refuses modes and rates the server could not honour."""
    for bad in ({"malformed": "xml"}, {"reset": "later"}, {"fail_rate": 1.5}, {"status": 42}):
        with pytest.raises(ValueError):
            Behaviour(**bad)


@pytest.mark.parametrize(
    ("code", "openai", "anthropic"),
    [
        ("insufficient_quota", (429, "insufficient_quota"), (402, "billing_error")),
        ("rate_limit_exceeded", (429, "requests"), (429, "rate_limit_error")),
        ("context_length_exceeded", (400, "invalid_request_error"), (400, "invalid_request_error")),
        ("invalid_api_key", (401, "invalid_request_error"), (401, "authentication_error")),
    ],
)
def test_error_codes_shape_bodies(
    fake: FakeProvider,
    client: httpx.Client,
    code: str,
    openai: tuple[int, str],
    anthropic: tuple[int, str],
) -> None:
    """error_code gives each format its real status, type and code."""
    fake.set_behaviour(Behaviour(error_code=code))
    r = client.post("/chat/completions", json=OPENAI_BODY)
    err = r.json()["error"]
    assert (r.status_code, err["type"]) == openai
    assert err["code"] == code
    assert err["message"]
    r = client.post("/messages", json=ANTHROPIC_BODY)
    body = r.json()
    assert body["type"] == "error"
    assert (r.status_code, body["error"]["type"]) == anthropic
    assert body["error"]["message"]


def test_error_code_with_forced_status(fake: FakeProvider, client: httpx.Client) -> None:
    """An explicit status wins over the error code's usual status; the body keeps the code."""
    fake.set_behaviour(Behaviour(status=503, error_code="rate_limit_exceeded"))
    r = client.post("/chat/completions", json=OPENAI_BODY)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_content_and_input_token_estimate(fake: FakeProvider, client: httpx.Client) -> None:
    """Given content is split into output_tokens chunks; input tokens are about chars / 4."""
    fake.set_behaviour(Behaviour(content="Hello, routeledger!", output_tokens=3))
    body = {**OPENAI_BODY, "messages": [{"role": "user", "content": "x" * 400}]}
    whole = client.post("/chat/completions", json=body).json()
    assert whole["choices"][0]["message"]["content"] == "Hello, routeledger!"
    assert whole["usage"]["prompt_tokens"] == 100
    assert whole["usage"]["completion_tokens"] == 3
    data = openai_stream(client)
    texts = [json.loads(d)["choices"][0]["delta"]["content"] for d in data[1:-2]]
    assert len(texts) == 3
    assert "".join(texts) == "Hello, routeledger!"
