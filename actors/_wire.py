"""What every wire adapter shares: the protocol, the HTTP plumbing and the error mapping.

A wire adapter turns a provider-neutral :class:`~routeledger.events.Request` into one HTTP
exchange with one provider and back into a :class:`~routeledger.events.Response` (or a stream
of :class:`~routeledger.events.StreamChunk`). Everything that can go wrong on the wire comes
out as a :class:`~routeledger.events.ProviderError`; nothing from httpx, msgspec or a
malformed body escapes. The mapping, by status and body:

==========================  ==============================================================
429                         ``RateLimited`` (``Retry-After`` / ``retry-after-ms`` parsed),
                            or ``QuotaExceeded`` when the body speaks of quota, billing or a
                            spend limit
402                         ``QuotaExceeded``
401, 403                    ``AuthenticationError``
400, 404, 413, 422          ``BadRequest``; ``ContextLengthExceeded`` for an over-long
                            prompt; ``QuotaExceeded`` for a 400 about credit or spend limits
                            (Anthropic reports an exhausted credit balance that way)
408, 409, 5xx, 529          ``ProviderUnavailable``
3xx                         ``ProtocolError``: redirects are never followed, so the API key
                            only ever goes to the configured origin
anything else               ``ProtocolError``
==========================  ==============================================================

Transport failures: a connect error, connect or pool timeout, bad URL or proxy failure means
the request never left (``ProviderConnectError``); a read or write timeout after sending is
``ProviderTimeout``; a dropped connection or broken HTTP after sending is
``ProviderUnavailable``; a body that cannot be decoded is ``ProtocolError``.

Error messages carry the provider's own message, truncated, with the API key and the prompt's
text removed.
"""

from __future__ import annotations

import abc
import email.utils
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx
import msgspec

from routeledger.actors._sse import SSEError, SSEEvent, SSEParser
from routeledger.events import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    ContextLengthExceeded,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Request,
    Response,
    Secret,
    StreamChunk,
    StreamInterrupted,
    Usage,
)

__all__ = [
    "Clock",
    "HTTPAdapter",
    "StreamState",
    "WireAdapter",
    "classify",
    "error_from_exception",
    "error_from_payload",
    "error_from_status",
    "make_adapter",
    "make_client",
    "parse_retry_after",
    "read_body",
]

Clock = Callable[[], float]
"""A wall clock in Unix seconds (``time.time``); used to turn an HTTP-date into a delay."""

ENCODER = msgspec.json.Encoder()
"""The one JSON encoder every adapter uses for request bodies."""

_ERROR_BODY_LIMIT = 64 * 1024
"""How much of an error body is read: enough for any real message, bounded against abuse."""

_MESSAGE_LIMIT = 300
"""How many characters of a provider's error message an exception keeps."""

_QUOTA = re.compile(
    r"quota|billing|spend(?:ing)?[ _]limit|credit balance|purchase credits", re.IGNORECASE
)
_CONTEXT = re.compile(
    r"context[ _]length|context window|context limit|maximum context|prompt is too long"
    r"|input is too long|too many (?:input )?tokens",
    re.IGNORECASE,
)
_SECONDS = re.compile(r"\d+(?:\.\d+)?")

# The HTTP status each provider's error ``type`` (or OpenAI ``code``) stands for, so that an
# error that arrives inside a 200 stream is classified exactly like the same error as a status.
_TYPE_STATUS = {
    # Anthropic
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
    # OpenAI
    "invalid_api_key": 401,
    "context_length_exceeded": 400,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "requests": 429,
    "tokens": 429,
    "server_error": 500,
}


@runtime_checkable
class WireAdapter(Protocol):
    """One provider's wire format over one ``httpx.Client``."""

    kind: str
    config: ProviderConfig

    def complete(
        self, request: Request, model: ModelSpec, *, timeout_s: float | None = None
    ) -> Response:
        """Send ``request`` and return the whole answer.

        Raises:
            ProviderError: The attempt failed; the subclass says how.
        """
        ...

    def stream(
        self, request: Request, model: ModelSpec, *, timeout_s: float | None = None
    ) -> Iterator[StreamChunk]:
        """Send ``request`` and yield the answer as it arrives.

        The last chunk carries ``finish_reason``, ``usage`` and ``cost``. Closing the
        generator closes the HTTP response.

        Raises:
            ProviderError: Before the first chunk, the mapped error; a stream that ends
                without its terminator after a chunk was yielded, ``StreamInterrupted``.
        """
        ...

    def probe(self, *, timeout_s: float | None = None) -> None:
        """Check the provider answers, with a free ``GET {base_url}/models``.

        Raises:
            ProviderError: The provider did not answer with 200.
        """
        ...


def make_client(config: ProviderConfig) -> httpx.Client:
    """Return an ``httpx.Client`` sized and configured for ``config``.

    The pool keeps up to ``max_concurrency`` connections alive and sets no cap of its own:
    the provider's concurrency budget is the cap, and it can be raised at run time
    (``set_concurrent_limit``), which a pool sized at start would silently undo. Redirects are
    not followed (an API key must reach only the configured origin); proxies and certificates
    from the environment are ignored so that a stray ``HTTPS_PROXY`` cannot see our traffic.
    """
    size = max(1, config.max_concurrency)
    return httpx.Client(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=size),
        timeout=_timeout(config, None),
        follow_redirects=False,
        trust_env=False,
    )


def make_adapter(
    config: ProviderConfig,
    *,
    client: httpx.Client | None = None,
    api_key: Secret | None = None,
    clock: Clock = time.time,
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
    # Imported here: the format modules import this one.
    if config.kind == "openai":
        from routeledger.actors._openai import OpenAIAdapter

        return OpenAIAdapter(config, client=client, api_key=api_key, clock=clock)
    if config.kind == "anthropic":
        from routeledger.actors._anthropic import AnthropicAdapter

        return AnthropicAdapter(config, client=client, api_key=api_key, clock=clock)
    raise ConfigError(f"provider {config.name!r}: unknown kind {config.kind!r}")


def _timeout(config: ProviderConfig, timeout_s: float | None) -> httpx.Timeout:
    total = config.timeout_s if timeout_s is None else max(timeout_s, 0.001)
    connect = min(config.connect_timeout_s, total)
    # A pool wait means the request was never sent; it gets the connect budget.
    return httpx.Timeout(total, connect=connect, pool=connect)


def parse_retry_after(headers: Mapping[str, str], *, clock: Clock = time.time) -> float | None:
    """Return how many seconds the provider asked us to wait, or ``None`` if it did not say.

    ``retry-after-ms`` (milliseconds) wins over ``Retry-After``, which is either seconds or an
    HTTP-date (taken relative to ``clock()``; a past date means now). Garbage, negative or
    non-finite values give ``None``; large values are kept, the caller caps them.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None and _SECONDS.fullmatch(ms.strip()):
        value = float(ms) / 1000.0
        if math.isfinite(value):
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if _SECONDS.fullmatch(raw):
        value = float(raw)
        return value if math.isfinite(value) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110 dates are GMT; a date without a zone is not one
    return max(0.0, when.timestamp() - clock())


def read_body(
    response: httpx.Response,
    *,
    limit: int,
    provider: str | None = None,
    request_id: str | None = None,
    deadline: float | None = None,
) -> bytes:
    """Read a whole (decoded) body of at most ``limit`` bytes.

    Args:
        response: A response opened with ``stream=True``.
        limit: The largest body accepted.
        provider: Named in errors.
        request_id: Named in errors.
        deadline: A ``time.monotonic()`` instant after which reading stops.

    Raises:
        ProtocolError: The body is larger than ``limit``.
        ProviderTimeout: The deadline passed.
        httpx.HTTPError: Reading failed; the caller maps it.
    """
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(
            f"response body of {declared} bytes exceeds the limit of {limit}",
            provider=provider,
            request_id=request_id,
            status=response.status_code,
        )
    parts: list[bytes] = []
    size = 0
    for part in response.iter_bytes():
        size += len(part)
        if size > limit:
            raise ProtocolError(
                f"response body exceeds the limit of {limit} bytes",
                provider=provider,
                request_id=request_id,
                status=response.status_code,
            )
        parts.append(part)
        if deadline is not None and time.monotonic() > deadline:
            raise ProviderTimeout(
                "response body did not arrive in time",
                provider=provider,
                request_id=request_id,
                status=response.status_code,
            )
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    """Read at most ``limit`` bytes of an error body; a failure just ends the read."""
    parts: list[bytes] = []
    size = 0
    try:
        for part in response.iter_bytes():
            parts.append(part)
            size += len(part)
            if size >= limit:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass  # the status alone classifies the error; the body only adds detail
    return b"".join(parts)[:limit]


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _error_fields(payload: object) -> tuple[str | None, str | None, str | None]:
    """Return ``(type, code, message)`` from a decoded error body of either format."""
    if not isinstance(payload, dict):
        return None, None, None
    err: object = payload.get("error", payload)
    if isinstance(err, str):
        return None, None, err
    if not isinstance(err, dict):
        return None, None, None
    etype = err.get("type")
    code = err.get("code")
    details = err.get("details")
    if code is None and isinstance(details, dict):
        code = details.get("error_code")  # Anthropic's spend-limit 429
    message = err.get("message")
    if message is None:
        message = err.get("detail")
    return (
        etype if isinstance(etype, str) else None,
        str(code) if isinstance(code, str | int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else None,
    )


def classify(
    status: int,
    *,
    etype: str | None,
    code: str | None,
    message: str | None,
    retry_after_s: float | None,
    provider: str | None,
    request_id: str | None,
    reported_status: int | None,
) -> ProviderError:
    """Return the error for ``status`` and the body's ``type``, ``code`` and message."""
    text = " ".join(x for x in (etype, code, message) if x)
    label = f"HTTP {status}" if reported_status is not None else "error event"
    if code or etype:
        label += f" ({code or etype})"
    detail = f"{label}: {message}" if message else label
    kw: dict[str, Any] = {
        "provider": provider,
        "request_id": request_id,
        "status": reported_status,
    }
    if 300 <= status < 400:
        return ProtocolError(f"refused to follow a redirect: {detail}", **kw)
    if status == 429:
        if _QUOTA.search(text):
            return QuotaExceeded(f"quota exhausted: {detail}", **kw)
        return RateLimited(f"rate limited: {detail}", retry_after_s=retry_after_s, **kw)
    if status == 402:
        return QuotaExceeded(f"quota exhausted: {detail}", **kw)
    if status in (401, 403):
        return AuthenticationError(f"authentication failed: {detail}", **kw)
    if status in (400, 404, 413, 422):
        if _CONTEXT.search(text):
            return ContextLengthExceeded(f"context length exceeded: {detail}", **kw)
        if status == 400 and _QUOTA.search(text):
            return QuotaExceeded(f"quota exhausted: {detail}", **kw)
        return BadRequest(f"bad request: {detail}", **kw)
    if status in (408, 409) or 500 <= status <= 599:
        return ProviderUnavailable(
            f"provider unavailable: {detail}", retry_after_s=retry_after_s, **kw
        )
    return ProtocolError(f"unexpected status: {detail}", **kw)


def _decode_any(body: bytes) -> object:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def error_from_status(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    provider: str | None = None,
    request_id: str | None = None,
    clock: Clock = time.time,
    redact: Iterable[str] = (),
) -> ProviderError:
    """Return the error an HTTP answer with ``status`` stands for.

    Args:
        status: The HTTP status (not 200).
        headers: The response headers (``Retry-After``, ``retry-after-ms``).
        body: The (possibly truncated) response body.
        provider: Named in the error.
        request_id: Named in the error.
        clock: Wall clock for ``Retry-After`` dates.
        redact: Strings that must not appear in the message (the key, prompt text).
    """
    etype, code, message = _error_fields(_decode_any(body)) if body else (None, None, None)
    if message is None and body and not (300 <= status < 400):
        # Not a JSON error body (an HTML page from a proxy, say): a snippet still helps.
        message = body[:_MESSAGE_LIMIT].decode("utf-8", "replace")
    if message is not None:
        message = _clip(_redact(message, redact))
    return classify(
        status,
        etype=etype,
        code=code,
        message=message,
        retry_after_s=parse_retry_after(headers, clock=clock),
        provider=provider,
        request_id=request_id,
        reported_status=status,
    )


def error_from_payload(
    payload: object,
    *,
    provider: str | None = None,
    request_id: str | None = None,
    redact: Iterable[str] = (),
) -> ProviderError:
    """Return the error an error object inside a stream (or a 200 body) stands for.

    The error's ``type`` or ``code`` picks the status it would have had (Anthropic's
    ``overloaded_error`` is 529, ``rate_limit_error`` 429 and so on); unknown ones count as
    a server error.
    """
    etype, code, message = _error_fields(payload)
    status = _TYPE_STATUS.get(code or "", 0) or _TYPE_STATUS.get(etype or "", 500)
    if message is not None:
        message = _clip(_redact(message, redact))
    return classify(
        status,
        etype=etype,
        code=code,
        message=message,
        retry_after_s=None,
        provider=provider,
        request_id=request_id,
        reported_status=None,
    )


def error_from_exception(
    exc: BaseException,
    *,
    provider: str | None = None,
    request_id: str | None = None,
    redact: Iterable[str] = (),
) -> ProviderError:
    """Return the error an exception raised while talking to a provider stands for."""
    if isinstance(exc, ProviderError):
        return exc
    text = _clip(_redact(str(exc), redact))
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    kw: dict[str, Any] = {"provider": provider, "request_id": request_id}
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProviderConnectError(f"could not connect in time ({what})", **kw)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"no answer in time ({what})", **kw)
    if isinstance(
        exc,
        httpx.ConnectError
        | httpx.UnsupportedProtocol
        | httpx.ProxyError
        | httpx.LocalProtocolError
        | httpx.InvalidURL,
    ):
        return ProviderConnectError(f"could not send the request ({what})", **kw)
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return error_from_status(
            response.status_code, response.headers, b"", provider=provider, request_id=request_id
        )
    if isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects | SSEError):
        return ProtocolError(f"malformed answer ({what})", **kw)
    if isinstance(exc, httpx.HTTPError):
        # After sending: the provider may have started (and billed) the work.
        return ProviderUnavailable(f"connection failed ({what})", **kw)
    if isinstance(exc, ValueError | TypeError | KeyError | IndexError | AttributeError):
        return ProtocolError(f"malformed answer ({what})", **kw)
    return ProviderUnavailable(f"unexpected failure ({what})", **kw)


def _close(response: httpx.Response) -> None:
    try:
        response.close()
    except (httpx.HTTPError, httpx.StreamError):
        pass  # the exchange is over either way; closing must not mask the real outcome


class StreamState(abc.ABC):
    """What a stream has seen so far; format adapters subclass it with one ``on_event``."""

    __slots__ = ("done", "finish_reason", "model", "usage_in", "usage_out")

    def __init__(self, model: str) -> None:
        self.done = False
        self.model = model
        self.finish_reason: str | None = None
        self.usage_in: int | None = None
        self.usage_out: int | None = None

    @abc.abstractmethod
    def on_event(self, event: SSEEvent) -> StreamChunk | None:
        """Consume one event; return a chunk for the caller, or ``None``."""


class HTTPAdapter(abc.ABC):
    """The HTTP half of an adapter: sending, bounded reading, mapping every failure.

    Subclasses supply the URLs, the headers, the payload and the parsing.
    """

    kind: str = ""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        client: httpx.Client | None = None,
        api_key: Secret | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self._owns_client = client is None
        self._client = make_client(config) if client is None else client
        self._api_key = config.resolve_api_key() if api_key is None else api_key
        self._clock = clock
        self._provider = config.name
        self._base_url = config.base_url.rstrip("/")
        self._timeout = _timeout(config, None)
        self._headers = self._make_headers(self._api_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self._provider!r}, base_url={self._base_url!r})"

    def close(self) -> None:
        """Close the HTTP client if this adapter made it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HTTPAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- hooks for the formats -------------------------------------------------------------

    @abc.abstractmethod
    def _make_headers(self, api_key: Secret | None) -> dict[str, str]:
        """Return the headers every request carries (auth included)."""

    @abc.abstractmethod
    def _completion_url(self) -> str:
        """Return the URL completions are posted to."""

    @abc.abstractmethod
    def _payload(self, request: Request, model: ModelSpec, *, stream: bool) -> dict[str, Any]:
        """Return the wire payload of ``request``."""

    @abc.abstractmethod
    def _parse(self, body: bytes, request: Request, model: ModelSpec) -> Response:
        """Parse a successful JSON answer."""

    @abc.abstractmethod
    def _stream_state(self, model: ModelSpec, request: Request) -> StreamState:
        """Return a fresh parser state for one stream."""

    # -- the protocol ------------------------------------------------------------------------

    def complete(
        self, request: Request, model: ModelSpec, *, timeout_s: float | None = None
    ) -> Response:
        """Send ``request`` and return the whole answer (see :class:`WireAdapter`)."""
        body = self._encode(request, model, stream=False)
        budget = self.config.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        response = self._send("POST", self._completion_url(), body, request, timeout_s)
        try:
            raw = read_body(
                response,
                limit=self.config.max_response_bytes,
                provider=self._provider,
                request_id=request.request_id,
                deadline=deadline,
            )
        except ProviderError:
            raise
        except Exception as exc:
            raise self._error(exc, request) from self._cause(exc, request)
        finally:
            _close(response)
        try:
            return self._parse(raw, request, model)
        except ProviderError:
            raise
        except Exception as exc:
            # A shape we did not expect is the provider's fault, never a crash of ours.
            raise self._error(exc, request) from self._cause(exc, request)

    def stream(
        self, request: Request, model: ModelSpec, *, timeout_s: float | None = None
    ) -> Iterator[StreamChunk]:
        """Send ``request`` and yield the answer as it arrives (see :class:`WireAdapter`)."""
        body = self._encode(request, model, stream=True)
        response = self._send("POST", self._completion_url(), body, request, timeout_s)
        yielded = False
        try:
            ctype = response.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                raise ProtocolError(
                    f"expected an event stream, got content-type {_clip(ctype)!r}",
                    provider=self._provider,
                    request_id=request.request_id,
                    status=response.status_code,
                )
            state = self._stream_state(model, request)
            parser = SSEParser(max_line_bytes=self.config.max_line_bytes)
            for raw in response.iter_bytes():
                for event in parser.feed(raw):
                    chunk = state.on_event(event)
                    if state.done:
                        yield StreamChunk(
                            delta=chunk.delta if chunk is not None else "",
                            tool_calls=chunk.tool_calls if chunk is not None else None,
                            finish_reason=state.finish_reason,
                            usage=(usage := _usage(state)),
                            cost=model.cost(usage),
                            provider=self._provider,
                            model=state.model,
                        )
                        return
                    if chunk is not None:
                        yielded = True
                        yield chunk
            if yielded:
                raise StreamInterrupted(
                    "stream ended without its terminator; usage unknown",
                    provider=self._provider,
                    request_id=request.request_id,
                    status=response.status_code,
                )
            # Nothing reached the caller: another provider may still serve the request.
            raise ProviderUnavailable(
                "stream ended before its first chunk",
                provider=self._provider,
                request_id=request.request_id,
                status=response.status_code,
            )
        except ProviderError:
            raise
        except Exception as exc:
            raise self._error(exc, request) from self._cause(exc, request)
        finally:
            _close(response)

    def probe(self, *, timeout_s: float | None = None) -> None:
        """Check the provider answers ``GET {base_url}/models`` with 200 (never billed)."""
        response = self._send("GET", f"{self._base_url}/models", None, None, timeout_s)
        try:
            read_body(response, limit=self.config.max_response_bytes, provider=self._provider)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._error(exc, None) from self._cause(exc, None)
        finally:
            _close(response)

    # -- plumbing ----------------------------------------------------------------------------

    def _encode(self, request: Request, model: ModelSpec, *, stream: bool) -> bytes:
        try:
            return ENCODER.encode(self._payload(request, model, stream=stream))
        except BadRequest as exc:
            exc.provider = self._provider
            exc.request_id = request.request_id
            raise
        except (TypeError, ValueError) as exc:
            # Tool schemas are caller data: one that is not JSON is a bad request, not a crash.
            raise BadRequest(
                f"request cannot be encoded as JSON ({type(exc).__name__})",
                provider=self._provider,
                request_id=request.request_id,
            ) from exc

    def _redactions(self, request: Request | None) -> list[str]:
        secrets = [self._api_key.reveal()] if self._api_key is not None else []
        if request is not None:
            # Only texts long enough not to erase ordinary words from a provider's message.
            secrets.extend(t for m in request.messages if len(t := m.text()) >= 8)
        return secrets

    def _cause(self, exc: BaseException, request: Request | None) -> BaseException | None:
        """Return ``exc`` to chain, or ``None`` if its text holds the key or prompt text."""
        text = str(exc)
        return None if any(s in text for s in self._redactions(request) if s) else exc

    def _error(self, exc: BaseException, request: Request | None) -> ProviderError:
        return error_from_exception(
            exc,
            provider=self._provider,
            request_id=request.request_id if request is not None else None,
            redact=self._redactions(request),
        )

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        request: Request | None,
        timeout_s: float | None,
    ) -> httpx.Response:
        """Send one request and return its open 200 response, or raise the mapped error."""
        timeout = self._timeout if timeout_s is None else _timeout(self.config, timeout_s)
        try:
            http_request = self._client.build_request(
                method, url, content=body, headers=self._headers, timeout=timeout
            )
            # Per call, so that a shared client configured otherwise cannot leak the key.
            response = self._client.send(http_request, stream=True, follow_redirects=False)
        except Exception as exc:
            raise self._error(exc, request) from self._cause(exc, request)
        if response.status_code == 200:
            return response
        try:
            body_prefix = _read_prefix(response, _ERROR_BODY_LIMIT)
        finally:
            _close(response)
        raise error_from_status(
            response.status_code,
            response.headers,
            body_prefix,
            provider=self._provider,
            request_id=request.request_id if request is not None else None,
            clock=self._clock,
            redact=self._redactions(request),
        )


def _usage(state: StreamState) -> Usage | None:
    if state.usage_in is None and state.usage_out is None:
        return None
    return Usage(input_tokens=state.usage_in or 0, output_tokens=state.usage_out or 0)
