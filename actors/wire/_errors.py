"""How a failed exchange with a provider becomes one of our errors, and ``Retry-After``.

Everything that can go wrong on the wire comes out as a
:class:`~routeledger.events.ProviderError`; nothing from httpx, msgspec or a malformed body
escapes. The mapping, by status and body:

==========================  ==============================================================
429                         ``RateLimited`` (``Retry-After`` / ``retry-after-ms`` parsed),
                            or ``QuotaExceeded`` when the body speaks of quota, billing or a
                            spend limit
402                         ``QuotaExceeded``
401, 403                    ``AuthenticationError``
400, 404, 413, 422          ``BadRequest``; ``ContextLengthExceeded`` for an over-long
                            prompt; ``QuotaExceeded`` for a 400 about credit or spend limits
                            (Anthropic reports an exhausted credit balance that way);
                            ``UnsupportedByProvider`` (failover allowed) for a 404, and for a
                            400 / 422 that names an unsupported parameter or value or an
                            unknown model (OpenAI codes ``unsupported_parameter``,
                            ``unsupported_value``, ``model_not_found``)
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
text removed, and control characters escaped; so do the ``type`` and ``code`` a body names,
whatever the status it came with.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import msgspec

from routeledger.actors.wire._resets import reset_after
from routeledger.actors.wire._sse import SSEError
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
    UnsupportedByProvider,
    escape_controls,
)

__all__ = [
    "WallClock",
    "classify",
    "clip",
    "error_from_exception",
    "error_from_payload",
    "error_from_status",
    "parse_retry_after",
    "redact",
]

WallClock = Callable[[], float]
"""A wall clock in Unix seconds (``time.time``); used to turn an HTTP-date into a delay."""

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
_UNSUPPORTED_CODES = frozenset({"unsupported_parameter", "unsupported_value", "model_not_found"})
_UNSUPPORTED = re.compile(
    r"unsupported (?:parameter|value)|(?:is|are) not supported|does not support"
    r"|not supported (?:with|by|for|on) this model|model[^.]{0,80}(?:does not exist|not found)",
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
    "unsupported_parameter": 400,
    "unsupported_value": 400,
    "model_not_found": 404,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "requests": 429,
    "tokens": 429,
    "server_error": 500,
}


def parse_retry_after(headers: Mapping[str, str], *, clock: WallClock = time.time) -> float | None:
    """Return how many seconds the provider asked us to wait, or ``None`` if it did not say.

    ``retry-after-ms`` (milliseconds) wins over ``Retry-After``, which is either seconds or an
    HTTP-date (taken relative to ``clock()``; a past date means now). Garbage, negative or
    non-finite values give ``None``; large values are kept, the caller caps them. With
    neither, the rate-limit reset headers of OpenAI and Anthropic say it
    (:func:`~routeledger.actors.wire._resets.reset_after`).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None and _SECONDS.fullmatch(ms.strip()):
        value = float(ms) / 1000.0
        if math.isfinite(value):
            return value
    raw = headers.get("retry-after")
    if raw is None:
        return reset_after(headers, clock=clock)
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


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every non-empty string of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


_redact = redact  # for the functions below, whose parameter is named ``redact``


def _provided(
    etype: str | None, code: str | None, message: str | None, secrets: Iterable[str]
) -> tuple[str | None, str | None, str | None]:
    """Return a body's ``type``, ``code`` and message fit for an error: redacted, clipped."""
    secrets = list(secrets)
    return (
        None if etype is None else clip(redact(etype, secrets)),
        None if code is None else clip(redact(code, secrets)),
        None if message is None else clip(redact(message, secrets)),
    )


def clip(text: str) -> str:
    """Return ``text`` on one line, control characters escaped, cut to what a message keeps."""
    text = escape_controls(" ".join(text.split()))
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
        if status == 404 or (
            status != 413 and (code in _UNSUPPORTED_CODES or _UNSUPPORTED.search(text))
        ):
            # Specific to this provider (its models, its parameters): another may accept it.
            return UnsupportedByProvider(f"not supported by this provider: {detail}", **kw)
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
    clock: WallClock = time.time,
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
    etype, code, message = _provided(etype, code, message, redact)
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
    etype, code, message = _provided(etype, code, message, redact)
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
    text = clip(_redact(str(exc), redact))
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
