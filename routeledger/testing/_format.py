"""What each server-side wire format provides, and the helpers both formats share.

The fake serves two formats (`routeledger.testing._openai`, `routeledger.testing._anthropic`);
the answer logic (`routeledger.testing._answer`) only talks to this `WireFormat` protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import msgspec

if TYPE_CHECKING:
    from routeledger.testing._behaviour import Behaviour, ErrorShape

__all__ = [
    "ENCODER",
    "NO_EXTRAS",
    "Extras",
    "StreamParts",
    "WireFormat",
    "extras_of",
    "input_tokens",
    "split_in_two",
    "validate_common",
]

ENCODER = msgspec.json.Encoder()


class Extras(msgspec.Struct, frozen=True, kw_only=True):
    """What an answer carries besides text (see the same-named ``Behaviour`` fields)."""

    tool_call: str | None = None
    tool_arguments: str = "{}"
    refusal: str | None = None
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    server_tools: bool = False

    @property
    def counts(self) -> bool:
        """Return whether any cache or reasoning count is to be reported."""
        return bool(self.cached_input_tokens or self.cache_write_tokens or self.reasoning_tokens)


NO_EXTRAS = Extras()


def extras_of(behaviour: Behaviour) -> Extras:
    """Return the extras ``behaviour`` asks answers to carry."""
    return Extras(
        tool_call=behaviour.tool_call,
        tool_arguments=behaviour.tool_arguments,
        refusal=behaviour.refusal,
        cached_input_tokens=behaviour.cached_input_tokens,
        cache_write_tokens=behaviour.cache_write_tokens,
        reasoning_tokens=behaviour.reasoning_tokens,
        server_tools=behaviour.server_tools,
    )


def split_in_two(text: str) -> list[str]:
    """Return ``text`` as two stream fragments (one when it is shorter than two)."""
    if len(text) < 2:
        return [text]
    half = len(text) // 2
    return [text[:half], text[half:]]


# (preamble, one event per text chunk, epilogue, error event) of a stream.
StreamParts = tuple[bytes, list[bytes], bytes, bytes]


class WireFormat(Protocol):
    """The server side of one provider API.

    Attributes:
        name: ``"openai"`` or ``"anthropic"``.
        request_id_header: The response header naming the request (with ``: ``).
        wrong_json_stream_end: The terminator sent after a stream of wrong-shaped events.
    """

    name: str
    request_id_header: bytes
    wrong_json_stream_end: bytes

    def validate(self, body: bytes, parsed: Any) -> str | None:
        """Return why the request body is rejected (400), or None."""
        ...

    def error_status(self, shape: ErrorShape) -> int:
        """Return this format's status for a known provider error."""
        ...

    def error_body(self, status: int, code: str | None, message: str | None, rid: str) -> bytes:
        """Encode an error body for ``status`` (and ``code`` if known)."""
        ...

    def completion(
        self,
        n: int,
        model: str,
        text: str,
        input_tokens: int,
        output_tokens: int,
        extras: Extras = NO_EXTRAS,
    ) -> dict[str, Any]:
        """Return the JSON answer of request number ``n``."""
        ...

    def stream(
        self,
        n: int,
        model: str,
        texts: list[str],
        input_tokens: int,
        output_tokens: int,
        parsed: dict[str, Any],
        extras: Extras = NO_EXTRAS,
    ) -> StreamParts:
        """Return the encoded events of a streamed answer to request number ``n``."""
        ...


def validate_common(body: bytes, parsed: Any) -> str | None:
    """Return why a chat request body is rejected in either format (400), or None."""
    if not body:
        return "missing request body: expected a JSON object"
    if not isinstance(parsed, dict):
        return (
            "request body is not a JSON object"
            if parsed is not None
            else ("request body is not valid JSON")
        )
    if not isinstance(parsed.get("model"), str):
        return "model: field required (a string)"
    if not isinstance(parsed.get("messages"), list):
        return "messages: field required (a list)"
    return None


def input_tokens(parsed: dict[str, Any]) -> int:
    """Estimate the input tokens of a request: about four characters of text a token."""
    chars = _count_chars(parsed.get("messages")) + _count_chars(parsed.get("system"))
    return max(1, (chars + 3) // 4)


def _count_chars(value: Any) -> int:
    """Count the characters of message text (strings and text blocks) for the token estimate."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_count_chars(item) for item in value)
    if isinstance(value, dict):
        if "text" in value:
            return _count_chars(value["text"])
        if "content" in value:
            return _count_chars(value["content"])
    return 0
