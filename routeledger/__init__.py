"""routeledger: route LLM requests across providers; every decision is an event.

The public surface: :class:`Runtime` and the configuration, request and error types, and
:func:`replay`. The repository's ``README.md`` shows how to use them, and its
``ARCHITECTURE.md`` describes the actors, the request path, the failure model and the layers.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from routeledger._replay import replay
from routeledger._runtime import Runtime, ShutdownReport
from routeledger._whatif import WhatIf, whatif
from routeledger.actors._clock import Clock, SystemClock, VirtualClock
from routeledger.events import (
    ABAssignment,
    ABTestConfig,
    ABVariantResult,
    AllProvidersFailed,
    AllProvidersSaturated,
    AllProvidersUnhealthy,
    AttemptCancelled,
    AuthenticationError,
    BadRequest,
    CacheConfig,
    ConfigError,
    ContextLengthExceeded,
    CostConfig,
    CostEstimate,
    DeadlineExceeded,
    FailoverConfig,
    HealthCheckResult,
    HealthConfig,
    ImagePart,
    LogConfig,
    Message,
    ModelSpec,
    NoCapableProvider,
    PoolConfig,
    PromptTooLong,
    ProtocolError,
    ProviderConfig,
    ProviderConnectError,
    ProviderError,
    ProviderHealth,
    ProviderMetrics,
    ProviderSaturated,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Request,
    RequestCancelled,
    RequestError,
    Requirements,
    Response,
    RouteledgerError,
    RouteResult,
    RoutingError,
    RuntimeClosed,
    RuntimeConfig,
    StoreError,
    StreamCancelled,
    StreamChunk,
    StreamInterrupted,
    TextPart,
    Tool,
    ToolCall,
    UnsupportedByProvider,
    Usage,
    UsageReport,
)

__all__ = [
    "ABAssignment",
    "ABTestConfig",
    "ABVariantResult",
    "AllProvidersFailed",
    "AllProvidersSaturated",
    "AllProvidersUnhealthy",
    "AttemptCancelled",
    "AuthenticationError",
    "BadRequest",
    "CacheConfig",
    "Clock",
    "ConfigError",
    "ContextLengthExceeded",
    "CostConfig",
    "CostEstimate",
    "DeadlineExceeded",
    "FailoverConfig",
    "HealthCheckResult",
    "HealthConfig",
    "ImagePart",
    "LogConfig",
    "Message",
    "ModelSpec",
    "NoCapableProvider",
    "PoolConfig",
    "PromptTooLong",
    "ProtocolError",
    "ProviderConfig",
    "ProviderConnectError",
    "ProviderError",
    "ProviderHealth",
    "ProviderMetrics",
    "ProviderSaturated",
    "ProviderTimeout",
    "ProviderUnavailable",
    "QuotaExceeded",
    "RateLimited",
    "Request",
    "RequestCancelled",
    "RequestError",
    "Requirements",
    "Response",
    "RouteResult",
    "RouteledgerError",
    "RoutingError",
    "Runtime",
    "RuntimeClosed",
    "RuntimeConfig",
    "ShutdownReport",
    "StoreError",
    "StreamCancelled",
    "StreamChunk",
    "StreamInterrupted",
    "SystemClock",
    "TextPart",
    "Tool",
    "ToolCall",
    "UnsupportedByProvider",
    "Usage",
    "UsageReport",
    "VirtualClock",
    "WhatIf",
    "__version__",
    "replay",
    "whatif",
]

try:
    __version__ = version("routeledger")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# A library never configures logging: without this handler, Python's last-resort handler would
# print routeledger's warnings to stderr of an application that did not set up logging.
logging.getLogger("routeledger").addHandler(logging.NullHandler())
