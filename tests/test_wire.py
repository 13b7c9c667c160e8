"""Tests of the wire package's registry: which adapter serves which provider kind."""

from __future__ import annotations

import pytest
from wire_support import config

from routeledger.actors.wire import ADAPTERS, AnthropicAdapter, OpenAIAdapter, make_adapter
from routeledger.events import KINDS, ConfigError, Secret


def test_every_configurable_kind_has_an_adapter() -> None:
    """Each kind the configuration accepts has exactly one adapter, registered under its kind."""
    assert set(ADAPTERS) == set(KINDS)
    assert all(cls.kind == kind for kind, cls in ADAPTERS.items())


@pytest.mark.parametrize(
    ("kind", "cls"), [("openai", OpenAIAdapter), ("anthropic", AnthropicAdapter)]
)
def test_make_adapter_builds_the_registered_class(kind: str, cls: type) -> None:
    """make_adapter returns an instance of the class registered for the config's kind."""
    adapter = make_adapter(config(kind), api_key=Secret("k"))
    try:
        assert type(adapter) is cls
    finally:
        adapter.close()  # type: ignore[attr-defined]  # the protocol has no close()


def test_unknown_kind_is_config_error() -> None:
    """An unknown provider kind is a ConfigError."""
    with pytest.raises(ConfigError):
        make_adapter(config("gemini"))


def test_the_registry_cannot_be_changed() -> None:
    """ADAPTERS is read-only: a kind is added in code, not patched in at run time."""
    with pytest.raises(TypeError):
        ADAPTERS["gemini"] = OpenAIAdapter  # type: ignore[index]  # read-only, on purpose
