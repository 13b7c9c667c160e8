"""The wire: one HTTP exchange with one provider, in the provider's own format.

Modules, lowest first: ``_sse`` (the event-stream parser), ``_errors`` (a failed exchange
becomes one of our errors; ``Retry-After``), ``_http`` (the adapter protocol, the HTTP base
adapter, bounded reads), one module per format (``_openai``, ``_anthropic``), and
``_address`` (loopback hosts). This ``__init__`` holds the registry that picks an adapter by
a provider's ``kind``: the base adapter never needs to know its subclasses.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType

import httpx

from routeledger.actors.wire._anthropic import AnthropicAdapter
from routeledger.actors.wire._cancel import CancelScope
from routeledger.actors.wire._errors import (
    WallClock,
    classify,
    error_from_exception,
    error_from_payload,
    error_from_status,
    parse_retry_after,
)
from routeledger.actors.wire._http import (
    HTTPAdapter,
    StreamState,
    WireAdapter,
    decode_answer,
    make_client,
    read_body,
)
from routeledger.actors.wire._openai import OpenAIAdapter
from routeledger.actors.wire._sse import SSEError, SSEEvent, SSEParser
from routeledger.events import ConfigError, ProviderConfig, Secret, is_loopback

__all__ = [
    "ADAPTERS",
    "AnthropicAdapter",
    "CancelScope",
    "HTTPAdapter",
    "OpenAIAdapter",
    "SSEError",
    "SSEEvent",
    "SSEParser",
    "StreamState",
    "WallClock",
    "WireAdapter",
    "classify",
    "decode_answer",
    "error_from_exception",
    "error_from_payload",
    "error_from_status",
    "is_loopback",
    "make_adapter",
    "make_client",
    "parse_retry_after",
    "read_body",
]

ADAPTERS: Mapping[str, type[HTTPAdapter]] = MappingProxyType(
    {OpenAIAdapter.kind: OpenAIAdapter, AnthropicAdapter.kind: AnthropicAdapter}
)
"""The adapter class for each provider ``kind``."""


def make_adapter(
    config: ProviderConfig,
    *,
    client: httpx.Client | None = None,
    api_key: Secret | None = None,
    clock: WallClock = time.time,
) -> WireAdapter:
    """Return the adapter for ``config.kind`` (``openai`` or ``anthropic``).

    Args:
        config: The provider.
        client: The client to send with; when omitted the adapter makes (and owns) one.
        api_key: The key to send; defaults to ``config.resolve_api_key()``.
        clock: Wall clock for ``Retry-After`` dates.

    Raises:
        ConfigError: The kind is unknown.
    """
    adapter = ADAPTERS.get(config.kind)
    if adapter is None:
        raise ConfigError(f"provider {config.name!r}: unknown kind {config.kind!r}")
    return adapter(config, client=client, api_key=api_key, clock=clock)
