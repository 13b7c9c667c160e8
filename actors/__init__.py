"""The actors and what they run: provider actors with their wire adapters (the ``wire``
subpackage), the supervisor and its routing logic, the health actor, the log writer, and the
clock abstraction."""

from __future__ import annotations

from routeledger.actors._clock import Clock, SystemClock, VirtualClock
from routeledger.actors._health import HealthActor, HealthMonitor
from routeledger.actors._messages import RouteQuery
from routeledger.actors._provider import ProviderActor, ProviderHandle
from routeledger.actors._router import Router
from routeledger.actors._supervisor import SupervisorActor
from routeledger.actors._writer import EventWriter, LogWriterActor
from routeledger.actors.wire import (
    AnthropicAdapter,
    OpenAIAdapter,
    SSEError,
    SSEEvent,
    SSEParser,
    WireAdapter,
    make_adapter,
    make_client,
    parse_retry_after,
)

__all__ = [
    "AnthropicAdapter",
    "Clock",
    "EventWriter",
    "HealthActor",
    "HealthMonitor",
    "LogWriterActor",
    "OpenAIAdapter",
    "ProviderActor",
    "ProviderHandle",
    "RouteQuery",
    "Router",
    "SSEError",
    "SSEEvent",
    "SSEParser",
    "SupervisorActor",
    "SystemClock",
    "VirtualClock",
    "WireAdapter",
    "make_adapter",
    "make_client",
    "parse_retry_after",
]
