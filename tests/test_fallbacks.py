"""Model fallback: other models once every provider of the requested one is exhausted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from routeledger import (
    AllProvidersFailed,
    ConfigError,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Runtime,
    RuntimeConfig,
    Tool,
)
from routeledger.testing import Behaviour, FakeProvider, no_backoff

Fakes = Callable[..., list[FakeProvider]]


def _provider(name: str, fake: FakeProvider, *models: ModelSpec) -> ProviderConfig:
    return ProviderConfig(
        name=name, kind="openai", base_url=fake.url + "/v1", models=list(models), timeout_s=5.0
    )


def _spec(name: str, **kw: Any) -> ModelSpec:
    kw.setdefault("input_per_mtok", 1.0)
    kw.setdefault("output_per_mtok", 2.0)
    return ModelSpec(name=name, **kw)


def _req(model: str = "big", **kw: Any) -> Request:
    kw.setdefault("max_tokens", 8)
    return Request(model=model, messages=[Message(role="user", content="hello")], **kw)


def _config(providers: list[ProviderConfig], **kw: Any) -> RuntimeConfig:
    return RuntimeConfig(providers=providers, seed=0, failover=no_backoff(), **kw)


def test_fallback_problems_are_reported_unknown_models_and_cycles() -> None:
    """Unknown models, a model falling back to itself and cycles are ConfigErrors."""
    url = "http://127.0.0.1:1/v1"
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig.from_dict(
            {
                "providers": [
                    {
                        "name": "a",
                        "kind": "openai",
                        "base_url": url,
                        "models": [{"name": "big"}, {"name": "small"}, {"name": "tiny"}],
                    }
                ],
                "fallbacks": {
                    "big": ["small", "ghost"],
                    "small": ["tiny"],
                    "tiny": ["big", "tiny"],
                    "nope": ["big"],
                },
            }
        )
    text = "\n".join(caught.value.problems)
    assert "fallbacks['big']: no provider serves model 'ghost'" in text
    assert "fallbacks['nope']: no provider serves model 'nope'" in text
    assert "fallbacks['tiny']: a model cannot fall back to itself" in text
    assert "fallbacks: cycle big -> small -> tiny -> big" in text
    assert text.count("cycle big -> small -> tiny -> big") == 1


def test_fallbacks_load_from_toml(tmp_path: Path) -> None:
    """``fallbacks = { big = [...] }`` in TOML is the fallback chain."""
    path = tmp_path / "rl.toml"
    path.write_text(
        """
fallbacks = { big = ["medium", "small"] }

[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
models = [{ name = "big" }, { name = "medium" }, { name = "small" }]
"""
    )
    assert RuntimeConfig.from_toml(path).fallbacks == {"big": ["medium", "small"]}


def test_a_request_falls_back_when_every_provider_of_its_model_failed(
    fakes: Fakes, db: Path, events: Any
) -> None:
    """The fallback model serves, the Response names it, and route.decided says why."""
    (down,) = fakes(1, Behaviour(status=503))
    (up,) = fakes(1)
    cfg = _config(
        [_provider("a", down, _spec("big")), _provider("b", up, _spec("small"))],
        fallbacks={"big": ["small"]},
    )
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        response = rt.complete(_req())
        rt.flush()
    assert (response.provider, response.model, response.attempts) == ("b", "small", 2)
    first, second = events(db, "route.decided")
    assert first.fallback_from is None and first.model == "big"
    assert second.fallback_from == "big" and second.model == "small"
    assert second.reason.startswith("model 'big' exhausted, fallback to 'small'")
    assert "(model 'big')" in second.excluded["a"]
    [done] = events(db, "request.completed")
    assert done.model == "small"


def test_a_fallback_without_the_needed_capability_or_window_is_skipped(
    fakes: Fakes, db: Path, events: Any
) -> None:
    """Fallbacks lacking a required capability or a large enough context window are passed."""
    (up,) = fakes(1)
    tools = frozenset({"streaming", "tools"})
    cfg = _config(
        [
            _provider(
                "a",
                up,
                _spec("notools"),
                _spec("narrow", capabilities=tools, context_window=8),
                _spec("fits", capabilities=tools),
            )
        ],
        fallbacks={"big": ["notools", "narrow", "fits"]},
    )
    # "big" is served by a provider that is disabled: exhausted from the start.
    cfg.providers.append(
        ProviderConfig(
            name="z",
            kind="openai",
            base_url=up.url + "/v1",
            models=[_spec("big", capabilities=tools)],
            enabled=False,
        )
    )
    with Runtime.start(cfg, event_log=db, active_health_checks=False) as rt:
        response = rt.complete(_req(tools=[Tool(name="f")], max_tokens=16))
        rt.flush()
    assert response.model == "fits"
    [decided] = events(db, "route.decided")
    assert decided.fallback_from == "big"


def test_without_fallbacks_an_exhausted_model_fails_as_before(fakes: Fakes, db: Path) -> None:
    """No fallback configured: the request fails with the providers' errors."""
    (down,) = fakes(1, Behaviour(status=503))
    (up,) = fakes(1)
    cfg = _config([_provider("a", down, _spec("big")), _provider("b", up, _spec("small"))])
    with (
        Runtime.start(cfg, event_log=db, active_health_checks=False) as rt,
        pytest.raises(AllProvidersFailed),
    ):
        rt.complete(_req())
