"""End to end through loopback fake providers: reasoning models and provider-specific
rejections, prompt-cache pricing, refusals, server-tool streams, usage keyed by model name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from routeledger import (
    BadRequest,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
    TextPart,
    replay,
)
from routeledger.testing import Behaviour, FakeProvider, no_backoff

PRICES: dict[str, Any] = {"input_per_mtok": 1.0, "output_per_mtok": 4.0}


@pytest.fixture
def fake() -> Iterator[Callable[[Behaviour], FakeProvider]]:
    """Return a starter of fake providers; all stop at teardown."""
    started: list[FakeProvider] = []

    def start(behaviour: Behaviour) -> FakeProvider:
        provider = FakeProvider(behaviour, seed=len(started))
        provider.start()
        started.append(provider)
        return provider

    yield start
    for provider in started:
        provider.stop()


def provider(name: str, fake: FakeProvider, kind: str, *models: ModelSpec, **kw: Any) -> Any:
    """Return a provider of ``kind`` on ``fake``."""
    return ProviderConfig(
        name=name, kind=kind, base_url=fake.url + "/v1", models=list(models), timeout_s=5.0, **kw
    )


def start(db: Path, *providers: ProviderConfig) -> Runtime:
    """Start a runtime over ``providers`` (no backoff, no active checks)."""
    config = RuntimeConfig(providers=list(providers), failover=no_backoff(), seed=0)
    return Runtime.start(config, event_log=db, active_health_checks=False)


def ask(model: str = "thinker", **kw: Any) -> Request:
    """Return a one-message request for ``model``."""
    kw.setdefault("max_tokens", 16)
    return Request(model=model, messages=[Message(role="user", content="hello there")], **kw)


def test_reasoning_rejection_fails_over_to_another_provider(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path
) -> None:
    """A model not marked reasoning is refused max_tokens there; Anthropic serves instead."""
    openai = fake(Behaviour(reasoning_models=["o4-mini"]))
    anthropic = fake(Behaviour())
    spec = ModelSpec(name="thinker", upstream="o4-mini", **PRICES)
    with start(
        tmp_path / "a.sqlite",
        provider("openai", openai, "openai", spec, priority=10),
        provider("anthropic", anthropic, "anthropic", ModelSpec(name="thinker", **PRICES)),
    ) as rt:
        response = rt.complete(ask())
    assert (response.provider, response.attempts) == ("anthropic", 2)
    assert openai.stats.requests == 1  # not retried on the provider that cannot serve it


def test_reasoning_model_is_sent_max_completion_tokens(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path
) -> None:
    """Marked reasoning, the same model is served first time, sampling parameters left out."""
    openai = fake(Behaviour(reasoning_models=["o4-mini"]))
    spec = ModelSpec(name="thinker", upstream="o4-mini", reasoning=True, **PRICES)
    with start(tmp_path / "b.sqlite", provider("openai", openai, "openai", spec)) as rt:
        response = rt.complete(ask(temperature=0.5, reasoning_effort="low"))
        chunks = list(rt.stream(ask(stream=True, top_p=0.5)))
    assert (response.provider, response.attempts) == ("openai", 1)
    assert chunks[-1].finish_reason == "stop"


def test_malformed_request_is_not_tried_elsewhere(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path
) -> None:
    """A 400 that is not specific to the provider stays final: the second is never asked."""
    first = fake(Behaviour(status=400))
    second = fake(Behaviour())
    spec = ModelSpec(name="thinker", **PRICES)
    with (
        start(
            tmp_path / "c.sqlite",
            provider("first", first, "openai", spec, priority=10),
            provider("second", second, "openai", spec),
        ) as rt,
        pytest.raises(BadRequest),
    ):
        rt.complete(ask())
    assert second.stats.requests == 0


def test_cache_prices_reach_cost_usage_and_replay(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path
) -> None:
    """Anthropic cache reads and writes are priced apart, and replay agrees with live."""
    anthropic = fake(Behaviour(output_tokens=10, cached_input_tokens=9000, cache_write_tokens=500))
    spec = ModelSpec(
        name="claude", upstream="fake-model", input_per_mtok=3.0, output_per_mtok=15.0,
        cached_input_per_mtok=0.3, cache_write_per_mtok=3.75,
    )  # fmt: skip
    db = tmp_path / "d.sqlite"
    mark = {"type": "ephemeral"}
    cached_prompt = [
        Message(role="user", content=[TextPart("a long document", cache_control=mark)])
    ]
    with start(db, provider("anthropic", anthropic, "anthropic", spec)) as rt:
        response = rt.complete(Request(model="claude", messages=cached_prompt, max_tokens=16))
        streamed = list(rt.stream(Request(model="claude", messages=cached_prompt, stream=True)))
        rt.flush()
        live = rt.get_usage("all")
    usage = response.usage
    assert usage is not None
    assert (usage.cached_input_tokens, usage.cache_write_tokens) == (9000, 500)
    plain = usage.input_tokens - 9500
    expected = (plain * 3.0 + 9000 * 0.3 + 500 * 3.75 + 10 * 15.0) / 1e6
    assert response.cost == pytest.approx(expected)
    assert streamed[-1].usage == usage
    assert streamed[-1].cost == pytest.approx(expected)
    assert live.cost == pytest.approx(2 * expected)
    assert live.cached_input_tokens == 18000 and live.cache_write_tokens == 1000
    assert live.by_model["claude"].cached_input_tokens == 18000
    assert replay(db).usage("all") == live


def test_usage_is_keyed_by_the_configured_model_name(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path
) -> None:
    """Completions and streams count under the configured name, not the upstream id."""
    openai = fake(Behaviour(reasoning_tokens=5))
    spec = ModelSpec(name="fast", upstream="fake-model-2024-01-01", **PRICES)
    db = tmp_path / "e.sqlite"
    with start(db, provider("openai", openai, "openai", spec)) as rt:
        response = rt.complete(ask("fast"))
        list(rt.stream(ask("fast", stream=True)))
        rt.flush()
        usage = rt.get_usage("all")
    assert response.model == "fast"
    assert response.upstream_model == "fake-model-2024-01-01"
    assert list(usage.by_model) == ["fast"]
    assert usage.reasoning_tokens == 10
    assert replay(db).usage("all") == usage


def test_refusals_end_to_end(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path, events: Any
) -> None:
    """A refusal is Response.refusal with finish reason refusal, completed and streamed."""
    openai = fake(Behaviour(refusal="I can't help with that."))
    anthropic = fake(Behaviour(refusal="No can do."))
    spec = ModelSpec(name="thinker", **PRICES)
    db = tmp_path / "f.sqlite"
    with start(
        db,
        provider("openai", openai, "openai", spec),
        provider("anthropic", anthropic, "anthropic", spec),
    ) as rt:
        for name, text in (("openai", "I can't help with that."), ("anthropic", "No can do.")):
            response = rt.complete(ask(), preferred_provider=name)
            assert (response.refusal, response.finish_reason) == (text, "refusal")
            chunks = list(rt.stream(ask(stream=True), preferred_provider=name))
            assert chunks[-1].finish_reason == "refusal"
        rt.flush()
    finished = [e.finish_reason for e in events(db, "request.completed")]
    assert finished == ["refusal"] * 4


def test_anthropic_stream_with_server_tools_and_a_tool_call(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path
) -> None:
    """Thinking and server-tool blocks are skipped; text and the client tool call assemble."""
    anthropic = fake(
        Behaviour(server_tools=True, tool_call="lookup", tool_arguments='{"q": "x"}', content="Hi")
    )
    spec = ModelSpec(name="thinker", capabilities=frozenset({"streaming", "tools"}), **PRICES)
    with start(tmp_path / "g.sqlite", provider("anthropic", anthropic, "anthropic", spec)) as rt:
        chunks = list(rt.stream(ask(stream=True)))
        response = rt.complete(ask())
    assert "".join(c.delta for c in chunks) == "Hi"
    deltas = [tc for c in chunks for tc in c.tool_calls or ()]
    assert deltas[0].name == "lookup"
    assert "".join(d.arguments for d in deltas) == '{"q": "x"}'
    assert chunks[-1].finish_reason == "tool_calls"
    assert response.content == "Hi"
    assert [(t.name, t.arguments) for t in response.tool_calls] == [("lookup", '{"q":"x"}')]


def test_stream_answered_with_json_end_to_end(
    fake: Callable[[Behaviour], FakeProvider], tmp_path: Path
) -> None:
    """A server that ignores "stream" still serves a stream: one chunk with usage and cost."""
    openai = fake(Behaviour(ignore_stream=True, content="whole answer", output_tokens=3))
    spec = ModelSpec(name="thinker", **PRICES)
    with start(tmp_path / "h.sqlite", provider("openai", openai, "openai", spec)) as rt:
        chunks = list(rt.stream(ask(stream=True)))
    assert [c.delta for c in chunks] == ["whole answer"]
    assert chunks[-1].usage is not None and chunks[-1].cost is not None
