"""Tests of how a failed exchange becomes our error: statuses, bodies, exceptions, Retry-After."""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from wire_support import (
    CALLS,
    CANARY,
    KINDS,
    MODEL,
    NOW,
    PROMPT,
    Adapters,
    FailingBody,
    answer,
    call,
    config,
    request,
)

from routeledger.actors.wire import WireAdapter, error_from_status, make_adapter, parse_retry_after
from routeledger.events import (
    AuthenticationError,
    BadRequest,
    ContextLengthExceeded,
    ProtocolError,
    ProviderConnectError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Secret,
    UnsupportedByProvider,
)


@pytest.fixture
def adapter() -> Iterator[Callable[..., WireAdapter]]:
    """Return a factory of adapters over a MockTransport; closes their clients."""
    adapters = Adapters()
    yield adapters
    adapters.close()


def openai_error(message: str, etype: str, code: str | None = None) -> dict[str, Any]:
    """Return an OpenAI error body."""
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def anthropic_error(etype: str, message: str, **extra: Any) -> dict[str, Any]:
    """Return an Anthropic error body."""
    return {
        "type": "error",
        "error": {"type": etype, "message": message, **extra},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


STATUS_CASES: list[tuple[int, Any, type[ProviderError]]] = [
    (
        429,
        openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        RateLimited,
    ),
    (
        429,
        openai_error(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        QuotaExceeded,
    ),
    (
        429,
        anthropic_error(
            "rate_limit_error", "Number of request tokens has exceeded your rate limit"
        ),
        RateLimited,
    ),
    (
        429,
        anthropic_error(
            "rate_limit_error",
            "You have reached your usage limit.",
            details={"error_code": "enforced_spend_limit_reached"},
        ),
        QuotaExceeded,
    ),
    (402, anthropic_error("billing_error", "Payment required"), QuotaExceeded),
    (
        401,
        openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        AuthenticationError,
    ),
    (401, anthropic_error("authentication_error", "invalid x-api-key"), AuthenticationError),
    (403, anthropic_error("permission_error", "not allowed"), AuthenticationError),
    (400, openai_error("Invalid value for 'temperature'", "invalid_request_error"), BadRequest),
    (
        400,
        openai_error(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        ContextLengthExceeded,
    ),
    (
        400,
        anthropic_error(
            "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
        ),
        ContextLengthExceeded,
    ),
    (
        400,
        anthropic_error(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
        ),
        QuotaExceeded,
    ),
    (404, anthropic_error("not_found_error", "model: claude-nope"), UnsupportedByProvider),
    (413, anthropic_error("request_too_large", "Request exceeds the maximum size"), BadRequest),
    (422, {"detail": [{"msg": "field required"}]}, BadRequest),
    (408, None, ProviderUnavailable),
    (409, None, ProviderUnavailable),
    (500, openai_error("The server had an error", "server_error"), ProviderUnavailable),
    (502, None, ProviderUnavailable),
    (503, None, ProviderUnavailable),
    (504, None, ProviderUnavailable),
    (529, anthropic_error("overloaded_error", "Overloaded"), ProviderUnavailable),
    (301, None, ProtocolError),
    (302, None, ProtocolError),
    (307, None, ProtocolError),
    (308, None, ProtocolError),
    (201, None, ProtocolError),
    (405, None, ProtocolError),
    (418, None, ProtocolError),
]


@pytest.mark.parametrize("how", CALLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "body", "error"), STATUS_CASES)
def test_status_mapping(
    adapter: Callable[..., WireAdapter],
    kind: str,
    how: str,
    status: int,
    body: Any,
    error: type[ProviderError],
) -> None:
    """Each status (and error body) maps to its error type, for every call of both formats."""
    a = adapter(kind, answer(status, body))
    with pytest.raises(ProviderError) as info:
        call(a, how)
    assert type(info.value) is error
    assert info.value.status == status
    assert info.value.provider == f"p-{kind}"
    assert info.value.request_id == (None if how == "probe" else "rid-e")


def test_error_message_carries_provider_message(adapter: Callable[..., WireAdapter]) -> None:
    """The provider's own message is in the error, truncated when long."""
    a = adapter(
        "openai", answer(400, openai_error("Invalid 'temperature': 7", "invalid_request_error"))
    )
    with pytest.raises(BadRequest, match="Invalid 'temperature': 7"):
        a.complete(request(), MODEL)
    b = adapter("openai", answer(400, openai_error("x" * 5000, "invalid_request_error")))
    with pytest.raises(BadRequest) as info:
        b.complete(request(), MODEL)
    assert len(info.value.message) < 400


def test_html_error_page_snippet(adapter: Callable[..., WireAdapter]) -> None:
    """A non-JSON error page still maps by status and gives a snippet."""

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(502, content=b"<html><h1>502 Bad Gateway</h1></html>")

    with pytest.raises(ProviderUnavailable, match="502 Bad Gateway"):
        adapter("anthropic", handler).complete(request(), MODEL)


# -- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "99999999"}, 99999999.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "1e3"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00"}, None),
        ({"retry-after-ms": "-1"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After in seconds or as an HTTP-date (against the clock), and retry-after-ms."""
    assert parse_retry_after(httpx.Headers(headers), clock=lambda: NOW) == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry_after": "12"}, 12.0),
        ({"retry_after": email.utils.formatdate(NOW + 45, usegmt=True)}, 45.0),
        ({"retry_after_ms": "1500"}, 1.5),
        ({"retry_after": "garbage"}, None),
        ({}, None),
    ],
)
def test_rate_limited_carries_retry_after(
    adapter: Callable[..., WireAdapter], kind: str, headers: dict[str, str], expected: float | None
) -> None:
    """A 429 carries the wait the provider asked for, dates read with the injected clock."""
    a = adapter(kind, answer(429, None, **headers))
    with pytest.raises(RateLimited) as info:
        a.complete(request(), MODEL)
    assert info.value.retry_after_s == expected
    assert info.value.retryable


def test_unavailable_carries_retry_after() -> None:
    """A 503 or 529 with Retry-After keeps the hint too."""
    err = error_from_status(529, httpx.Headers({"retry-after": "3"}), b"")
    assert isinstance(err, ProviderUnavailable)
    assert err.retry_after_s == 3.0


# -- transport failures --------------------------------------------------------------------


def _all_subclasses(cls: type[BaseException]) -> list[type[BaseException]]:
    out: list[type[BaseException]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


HTTPX_ERRORS = sorted(
    {httpx.HTTPError, *_all_subclasses(httpx.HTTPError), *_all_subclasses(httpx.TransportError)},
    key=lambda c: c.__name__,
)

EXPECTED: dict[str, type[ProviderError]] = {
    "ConnectError": ProviderConnectError,
    "ConnectTimeout": ProviderConnectError,
    "PoolTimeout": ProviderConnectError,
    "UnsupportedProtocol": ProviderConnectError,
    "ProxyError": ProviderConnectError,
    "LocalProtocolError": ProviderConnectError,
    "ReadTimeout": ProviderTimeout,
    "WriteTimeout": ProviderTimeout,
    "TimeoutException": ProviderTimeout,
    "ReadError": ProviderUnavailable,
    "WriteError": ProviderUnavailable,
    "CloseError": ProviderUnavailable,
    "RemoteProtocolError": ProviderUnavailable,
    "NetworkError": ProviderUnavailable,
    "TransportError": ProviderUnavailable,
    "ProtocolError": ProviderUnavailable,
    "RequestError": ProviderUnavailable,
    "HTTPError": ProviderUnavailable,
    "DecodingError": ProtocolError,
    "TooManyRedirects": ProtocolError,
    "HTTPStatusError": ProviderUnavailable,  # built around a 500 below
}


def make_exception(cls: type[BaseException], r: httpx.Request, text: str) -> BaseException:
    """Instantiate any httpx error class the way httpx itself does."""
    if issubclass(cls, httpx.HTTPStatusError):
        return cls(text, request=r, response=httpx.Response(500, request=r))
    if issubclass(cls, httpx.RequestError):
        return cls(text, request=r)
    return cls(text)


def raising(cls: type[BaseException], text: str = "boom") -> Callable[[httpx.Request], Any]:
    """Return a handler that raises an instance of ``cls``."""

    def handler(r: httpx.Request) -> httpx.Response:
        raise make_exception(cls, r, text)

    return handler


def test_every_httpx_error_is_enumerated() -> None:
    """The walk finds httpx's whole error tree, so the mapping test covers it."""
    names = {c.__name__ for c in HTTPX_ERRORS}
    assert {"ConnectError", "PoolTimeout", "ReadTimeout", "RemoteProtocolError"} <= names
    assert len(HTTPX_ERRORS) >= 20


@pytest.mark.parametrize("how", CALLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cls", HTTPX_ERRORS, ids=lambda c: c.__name__)
def test_every_httpx_error_mapped_on_send(
    adapter: Callable[..., WireAdapter], kind: str, how: str, cls: type[BaseException]
) -> None:
    """Every httpx error raised while sending becomes the right ProviderError."""
    a = adapter(kind, raising(cls))
    with pytest.raises(ProviderError) as info:
        call(a, how)
    assert type(info.value) is EXPECTED.get(cls.__name__, type(info.value))
    assert isinstance(info.value.__cause__, cls)


FIRST_EVENT = {
    "openai": b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n',
    "anthropic": b"event: content_block_delta\n"
    b'data: {"type": "content_block_delta", "index": 0, '
    b'"delta": {"type": "text_delta", "text": "Hi"}}\n\n',
}


@pytest.mark.parametrize("how", CALLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cls", HTTPX_ERRORS, ids=lambda c: c.__name__)
def test_every_httpx_error_mapped_mid_body(
    adapter: Callable[..., WireAdapter], kind: str, how: str, cls: type[BaseException]
) -> None:
    """Every httpx error raised while reading a body becomes a ProviderError."""

    def handler(r: httpx.Request) -> httpx.Response:
        body = FailingBody(FIRST_EVENT[kind], make_exception(cls, r, "mid"))
        return httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})

    a = adapter(kind, handler)
    with pytest.raises(ProviderError):
        call(a, how)


@pytest.mark.parametrize("exc", [KeyError("k"), TypeError("t"), RuntimeError("r"), OSError("o")])
def test_unexpected_exceptions_are_mapped(
    adapter: Callable[..., WireAdapter], exc: BaseException
) -> None:
    """Even a non-httpx exception from the transport leaves as a ProviderError."""

    def handler(r: httpx.Request) -> httpx.Response:
        raise exc

    for kind in KINDS:
        for how in CALLS:
            with pytest.raises(ProviderError):
                call(adapter(kind, handler), how)


@pytest.mark.parametrize("base_url", ["ftp://provider.test/v1", "http://[::1"])
def test_invalid_base_url_is_connect_error(base_url: str) -> None:
    """A base URL httpx cannot use fails as a connect error (nothing was sent)."""
    a: Any = make_adapter(config("openai", base_url=base_url), api_key=Secret(CANARY))
    try:
        for how in CALLS:
            with pytest.raises(ProviderConnectError):
                call(a, how)
    finally:
        a.close()


# -- secrets -------------------------------------------------------------------------------


def _texts_of(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), *(str(a) for a in exc.args)]
    if isinstance(exc, ProviderError):
        texts.append(exc.message)
    cause = exc.__cause__
    if cause is not None:
        texts.extend([str(cause), repr(cause)])
    return texts


ECHO = f"Incorrect API key provided: {CANARY}. Your prompt was: {PROMPT}"


@pytest.mark.parametrize("how", CALLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "handler",
    [
        answer(401, openai_error(ECHO, "invalid_request_error", "invalid_api_key")),
        answer(400, anthropic_error("invalid_request_error", ECHO)),
        answer(429, openai_error(ECHO, "requests")),
        answer(500, {"detail": ECHO}),
        lambda r: httpx.Response(502, content=ECHO.encode()),
        raising(httpx.ConnectError, ECHO),
        raising(httpx.ReadTimeout, ECHO),
        raising(httpx.LocalProtocolError, ECHO),
        raising(KeyError, ECHO),
    ],
)
def test_canary_key_and_prompt_never_in_errors(
    adapter: Callable[..., WireAdapter], kind: str, how: str, handler: Any
) -> None:
    """Neither the API key nor the prompt appears in any error text, even when echoed."""
    a = adapter(kind, handler)
    with pytest.raises(ProviderError) as info:
        call(a, how)
    for text in _texts_of(info.value):
        assert CANARY not in text
        if how != "probe":
            assert PROMPT not in text
    assert CANARY not in repr(a)
    assert CANARY not in str(a)
