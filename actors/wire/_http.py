"""The HTTP half every wire adapter shares: sending, bounded reading, mapping every failure.

A wire adapter turns a provider-neutral :class:`~routeledger.events.Request` into one HTTP
exchange with one provider and back into a :class:`~routeledger.events.Response` (or a stream
of :class:`~routeledger.events.StreamChunk`). :class:`HTTPAdapter` does the exchange; a format
module (``_openai``, ``_anthropic``) supplies the URL, the headers, the payload and the parsing.
Bodies are read within ``max_response_bytes`` and stream lines within ``max_line_bytes``, and
content-encoding is undone in bounded steps (:mod:`routeledger.actors.wire._decoding`), so a
compression bomb costs about the limit, never its decoded size; every
failure is mapped to a :class:`~routeledger.events.ProviderError` by
:mod:`routeledger.actors.wire._errors`. Redirects are never followed, so the API key only ever
goes to the configured origin. Time is bounded per exchange, not only per read (httpx's
timeouts are per read, which a trickling server defeats): a completion's whole answer and a
stream's headers within ``timeout_s``, a stream's first chunk within
``first_token_timeout_s``, and each later chunk within ``stream_idle_timeout_s`` of the one
before (:func:`~routeledger.actors.wire._cancel.time_bound`).

The module is a little over 500 lines because completion, stream and probe share one sending
path and one redaction of provider texts; split apart, each would need the other's private
helpers. The pure pieces already live beside it (decoding, SSE, error mapping, cancellation).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, runtime_checkable

import httpx
import msgspec

from routeledger.actors.wire._cancel import cancellable_transport, time_bound
from routeledger.actors.wire._decoding import ACCEPT_ENCODING, iter_decoded
from routeledger.actors.wire._errors import (
    WallClock,
    clip,
    error_from_exception,
    error_from_payload,
    error_from_status,
    redact,
)
from routeledger.actors.wire._oneshot import last_chunk
from routeledger.actors.wire._sse import SSEEvent, SSEParser
from routeledger.events import (
    BadRequest,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    Request,
    Response,
    Secret,
    StreamChunk,
    StreamInterrupted,
    Usage,
    escape_controls,
    url_password,
    url_without_password,
)

__all__ = [
    "ENCODER",
    "HTTPAdapter",
    "StreamState",
    "WireAdapter",
    "decode_answer",
    "make_client",
    "read_body",
]

_T = TypeVar("_T")
_S = TypeVar("_S", Response, StreamChunk)

_PROVIDED_FIELDS = {
    "model": False,
    "upstream_model": False,
    "finish_reason": False,
    "refusal": True,
}
"""Text fields of an answer that the provider writes and routeledger stores or prints, each
with whether it may span lines."""

ENCODER = msgspec.json.Encoder()
"""The one JSON encoder every adapter uses for request bodies."""

_ERROR_BODY_LIMIT = 64 * 1024
"""How much of an error body is read: enough for any real message, bounded against abuse."""

_ANY = msgspec.json.Decoder()
"""Decodes a 200 body of the wrong shape, to see whether it is an error object."""


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
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=size)
    return httpx.Client(
        # Its sockets can be shut down from another thread to cancel one request (_cancel.py).
        transport=cancellable_transport(limits),
        timeout=_timeout(config, None),
        follow_redirects=False,
        trust_env=False,
    )


def _timeout(config: ProviderConfig, timeout_s: float | None) -> httpx.Timeout:
    total = config.timeout_s if timeout_s is None else max(timeout_s, 0.001)
    connect = min(config.connect_timeout_s, total)
    # A pool wait means the request was never sent; it gets the connect budget.
    return httpx.Timeout(total, connect=connect, pool=connect)


def read_body(
    response: httpx.Response,
    *,
    limit: int,
    provider: str | None = None,
    request_id: str | None = None,
    deadline: float | None = None,
) -> bytes:
    """Read a whole (decoded) body of at most ``limit`` bytes, decoding no more than that.

    Args:
        response: A response opened with ``stream=True``.
        limit: The largest body accepted.
        provider: Named in errors.
        request_id: Named in errors.
        deadline: A ``time.monotonic()`` instant after which reading stops.

    Raises:
        ProtocolError: The body is larger than ``limit``.
        ProviderTimeout: The deadline passed.
        httpx.HTTPError: Reading or decoding failed; the caller maps it.
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
    for part in iter_decoded(response):
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


def decode_answer(
    decoder: msgspec.json.Decoder[_T],
    body: bytes,
    *,
    what: str,
    provider: str,
    request_id: str,
) -> _T:
    """Decode a successful (200) answer with ``decoder``, or raise the error it stands for.

    Every format decodes its answer this way: a body of the wrong shape is the provider's
    fault, and a body that is an error object (some compatible servers answer 200 with one)
    is classified like the same error sent with its status.

    Args:
        decoder: The format's typed decoder for its answer.
        body: The whole body.
        what: What the answer should be, for the error ("a chat completion").
        provider: Named in errors.
        request_id: Named in errors.

    Raises:
        ProtocolError: The body is not ``what``.
        ProviderError: The body is an error object.
    """
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        payload = _ANY.decode(body) if isinstance(exc, msgspec.ValidationError) else None
        if isinstance(payload, dict) and "error" in payload:
            raise error_from_payload(payload, provider=provider, request_id=request_id) from exc
        raise ProtocolError(
            f"answer is not {what} ({exc})",
            provider=provider,
            request_id=request_id,
            status=200,
        ) from exc


def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    """Read at most ``limit`` bytes of an error body; a failure just ends the read."""
    parts: list[bytes] = []
    size = 0
    try:
        for part in iter_decoded(response):
            parts.append(part)
            size += len(part)
            if size >= limit:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass  # the status alone classifies the error; the body only adds detail
    return b"".join(parts)[:limit]


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

    def usage(self) -> Usage | None:
        """Return the usage the stream reported, or ``None``; formats add cache counts."""
        return _usage(self)


class HTTPAdapter(abc.ABC):
    """The HTTP half of an adapter: sending, bounded reading, mapping every failure.

    Subclasses supply the URLs, the headers, the payload and the parsing.
    """

    kind: str = ""
    on_headers: Callable[[httpx.Headers], None] | None = None
    """Called with every response's headers (the rate-limit buckets read what is left)."""
    also_redact: tuple[Secret, ...] = ()
    """The provider's other API keys: redacted from provider texts like this one's."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        client: httpx.Client | None = None,
        api_key: Secret | None = None,
        clock: WallClock = time.time,
    ) -> None:
        self.config = config
        self._owns_client = client is None
        self._client = make_client(config) if client is None else client
        self._api_key = config.resolve_api_key() if api_key is None else api_key
        self._clock = clock
        self._provider = config.name
        self._base_url = config.base_url.rstrip("/")
        self._url_password = url_password(config.base_url)
        self._timeout = _timeout(config, None)
        self._headers = self._make_headers(self._api_key)
        if not any(k.lower() == "accept-encoding" for k in self._headers):
            # Only what iter_decoded can undo in bounded steps (httpx would offer br, zstd).
            self._headers["accept-encoding"] = ACCEPT_ENCODING

    def __repr__(self) -> str:
        shown = url_without_password(self._base_url)
        return f"{type(self).__name__}(provider={self._provider!r}, base_url={shown!r})"

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
        with time_bound(deadline, f"no complete answer within {budget:g} s (timeout_s)"):
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
            return self._clean(self._parse(raw, request, model), self._redactions(request))
        except ProviderError as exc:
            # An error object inside a 200 body carries the provider's text too.
            self._scrub(exc, request)
            raise
        except Exception as exc:
            # A shape we did not expect is the provider's fault, never a crash of ours.
            raise self._error(exc, request) from self._cause(exc, request)

    def stream(
        self, request: Request, model: ModelSpec, *, timeout_s: float | None = None
    ) -> Iterator[StreamChunk]:
        """Send ``request`` and yield the answer as it arrives (see :class:`WireAdapter`)."""
        body = self._encode(request, model, stream=True)
        budget = self.config.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        first = self.config.first_token_timeout_s
        idle = self.config.stream_idle_timeout_s or self.config.timeout_s
        # Each read is bounded by the next chunk's time; never held across a yield.
        next_by = None if first is None else started + first
        why = "" if first is None else f"no first chunk within {first:g} s (first_token_timeout_s)"
        with (
            time_bound(started + budget, f"no response headers within {budget:g} s (timeout_s)"),
            time_bound(next_by, why),  # the headers come before the first chunk
        ):
            response = self._send("POST", self._completion_url(), body, request, timeout_s)
        yielded = False
        try:
            ctype = response.headers.get("content-type", "")
            if "application/json" in ctype:
                # A server that ignores "stream": the whole answer is the stream's one chunk.
                yield self._clean(self._json_as_stream(response, request, model, timeout_s), [])
                return
            if "text/event-stream" not in ctype:
                raise ProtocolError(
                    f"expected an event stream, got content-type {clip(ctype)!r}",
                    provider=self._provider,
                    request_id=request.request_id,
                    status=response.status_code,
                )
            state = self._stream_state(model, request)
            parser = SSEParser(max_line_bytes=self.config.max_line_bytes)
            secrets = self._redactions(request)
            raws = iter_decoded(response)
            while True:
                with time_bound(next_by, why):
                    raw = next(raws, None)
                if raw is None:
                    break
                for event in parser.feed(raw):
                    chunk = state.on_event(event)
                    if state.done:
                        last = StreamChunk(
                            delta=chunk.delta if chunk is not None else "",
                            tool_calls=chunk.tool_calls if chunk is not None else None,
                            finish_reason=state.finish_reason,
                            usage=(usage := state.usage()),
                            cost=model.cost(usage),
                            provider=self._provider,
                            model=state.model,
                        )
                        yield self._clean(last, secrets)
                        return
                    if chunk is not None:
                        yielded = True
                        yield self._clean(chunk, secrets)
                        # From the caller's return: its own pace is not the provider's.
                        next_by = time.monotonic() + idle
                        why = f"no chunk for {idle:g} s (stream_idle_timeout_s)"
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
        except ProviderError as exc:
            # An error event inside a 200 stream carries the provider's text too.
            self._scrub(exc, request)
            raise
        except Exception as exc:
            raise self._error(exc, request) from self._cause(exc, request)
        finally:
            _close(response)

    def probe(self, *, timeout_s: float | None = None) -> None:
        """Check the provider answers ``GET {base_url}/models`` with 200 (never billed)."""
        budget = self.config.timeout_s if timeout_s is None else timeout_s
        with time_bound(time.monotonic() + budget, f"no answer within {budget:g} s"):
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

    def _json_as_stream(
        self,
        response: httpx.Response,
        request: Request,
        model: ModelSpec,
        timeout_s: float | None,
    ) -> StreamChunk:
        """Read a JSON answer to a stream request and return it as the stream's last chunk."""
        budget = self.config.timeout_s if timeout_s is None else timeout_s
        raw = read_body(
            response,
            limit=self.config.max_response_bytes,
            provider=self._provider,
            request_id=request.request_id,
            deadline=time.monotonic() + budget,
        )
        return last_chunk(self._clean(self._parse(raw, request, model), self._redactions(request)))

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
        secrets.extend(k.reveal() for k in self.also_redact)
        if self._url_password is not None:
            secrets.append(self._url_password)
        if request is not None:
            # Only texts long enough not to erase ordinary words from a provider's message.
            secrets.extend(t for m in request.messages if len(t := m.text()) >= 8)
        return secrets

    def _scrub(self, exc: ProviderError, request: Request | None) -> None:
        """Take the key and prompt text out of ``exc``'s message, escape its control characters
        (and unlink causes that hold a secret).

        The formats raise errors from 200 bodies and stream events without knowing the key;
        this is the one place every such error passes, whatever built it.
        """
        secrets = [s for s in self._redactions(request) if s]
        text = escape_controls(redact(exc.message, secrets), keep_newlines=True)
        if text != exc.message:
            exc.message = text
            exc.args = (text, *exc.args[1:])
        for linked in (exc.__cause__, exc.__context__):
            if linked is not None and any(s in str(linked) for s in secrets):
                exc.__cause__ = None
                exc.__suppress_context__ = True

    def _clean(self, answer: _S, secrets: list[str]) -> _S:
        """Return ``answer`` with its provider texts redacted and their controls escaped."""
        changes: dict[str, str] = {}
        for name, multiline in _PROVIDED_FIELDS.items():
            value = getattr(answer, name, None)
            if isinstance(value, str):
                clean = escape_controls(redact(value, secrets), keep_newlines=multiline)
                if clean != value:
                    changes[name] = clean
        return msgspec.structs.replace(answer, **changes) if changes else answer

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
        if self.on_headers is not None:
            self.on_headers(response.headers)
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
