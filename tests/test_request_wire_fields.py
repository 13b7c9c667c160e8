"""Tests of the request fields passed through to the wire and of the model's cache prices:
validation (events/_validation.py, events/_config.py) and ModelSpec.cost."""

from __future__ import annotations

from typing import Any

import pytest

from routeledger import ConfigError, Message, ModelSpec, ProviderConfig, Request, RuntimeConfig
from routeledger.events import RequestError, Usage, validate_request


def ask(**kw: Any) -> Request:
    """Return a one-message request with ``kw``."""
    return Request(model="m", messages=[Message(role="user", content="hi")], **kw)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"reasoning_effort": ""}, "reasoning_effort"),
        ({"reasoning_effort": 3}, "reasoning_effort"),
        ({"response_format": "json"}, "response_format"),
        ({"seed": True}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"extra_body": {"x": object()}}, "extra_body must be JSON-encodable"),
        ({"extra_body": {1: "x"}}, "extra_body must be a dict with string keys"),
        ({"extra_body": ["x"]}, "extra_body must be a dict"),
    ],
)
def test_bad_wire_fields_are_refused_before_sending(fields: dict[str, Any], problem: str) -> None:
    """Each malformed pass-through field is a RequestError naming it."""
    with pytest.raises(RequestError, match=problem):
        validate_request(ask(**fields))


def test_good_wire_fields_pass() -> None:
    """Well-formed pass-through fields are accepted as they are."""
    request = ask(
        reasoning_effort="high",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        seed=42,
        extra_body={"service_tier": "flex", "metadata": {"k": [1, 2]}},
    )
    assert validate_request(request) is request


def test_negative_cache_prices_are_refused() -> None:
    """A negative cached or cache-write price is a configuration problem."""
    spec = ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=1.0,
                     cached_input_per_mtok=-1.0, cache_write_per_mtok=-2.0)  # fmt: skip
    provider = ProviderConfig(name="p", kind="openai", base_url="http://127.0.0.1:9/v1",
                              models=[spec])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_dict({"providers": [provider]})
    text = str(info.value)
    assert "cached_input_per_mtok" in text and "cache_write_per_mtok" in text


def test_cost_without_cache_counts_is_unchanged() -> None:
    """With no cached or written tokens, cost is exactly input plus output pricing."""
    spec = ModelSpec(name="m", input_per_mtok=0.5, output_per_mtok=1.5, cached_input_per_mtok=0.1)
    assert spec.cost(Usage(input_tokens=1000, output_tokens=10)) == (1000 * 0.5 + 10 * 1.5) / 1e6


def test_reasoning_tokens_are_priced_as_output() -> None:
    """Reasoning tokens are part of output_tokens: they add nothing on top."""
    spec = ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=4.0)
    plain = spec.cost(Usage(input_tokens=10, output_tokens=100))
    assert spec.cost(Usage(input_tokens=10, output_tokens=100, reasoning_tokens=80)) == plain
