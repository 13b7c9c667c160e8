"""How the fake provider answers one request under its `Behaviour`.

The order of decisions is part of the contract the tests rely on: unknown path (404), wrong
method (405), the status (forced, random failure, or the error code's usual one), the delay,
a reset before the response, an error answer, the model listing, an invalid body (400),
a parameter a reasoning model refuses (400), malformed bodies, then a stream or a JSON answer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from routeledger.testing._anthropic import ANTHROPIC
from routeledger.testing._behaviour import ERROR_CODES, reply_texts
from routeledger.testing._format import ENCODER, extras_of, input_tokens
from routeledger.testing._http import CHUNK_END, chunk, head, reset, reset_soon
from routeledger.testing._openai import OPENAI

if TYPE_CHECKING:
    from routeledger.testing._exchange import Exchange
    from routeledger.testing._format import WireFormat

__all__ = ["answer", "format_of"]

_NOT_UTF8 = b"\xc3\x28\xff\xfe\xa0\xa1"
_NOT_UTF8_MARK = "\u2063NOTUTF8\u2063"
_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
    b"</body></html>\n"
)
_WRONG_JSON = b'{"object": "unexpected", "choices": "not-a-list", "content": 42, "data": [1, 2]}'


class _Reply(msgspec.Struct, frozen=True):
    """The content of a chat answer: the model echoed, the input estimate, the text chunks."""

    model: str
    input_tokens: int
    texts: list[str]


def format_of(path: str, headers: dict[str, str]) -> tuple[WireFormat, str]:
    """Return the wire format of a path and its kind: ``chat``, ``models`` or ``unknown``."""
    if path == "/v1/chat/completions":
        return OPENAI, "chat"
    if path == "/v1/messages":
        return ANTHROPIC, "chat"
    if path == "/v1/models" or path.startswith("/v1/models/"):
        return (ANTHROPIC if "anthropic-version" in headers else OPENAI), "models"
    return OPENAI, "unknown"


async def answer(ex: Exchange, kind: str) -> bool:
    """Answer ``ex`` (of the given kind); return whether to keep the connection."""
    beh = ex.behaviour
    method, path = ex.request.method, ex.request.path
    ex.extra = ex.fmt.request_id_header + ex.rid.encode() + b"\r\n"
    mid_body = beh.reset == "mid_body"

    if kind == "unknown":
        return await ex.send_error(404, "unknown_url", f"Unknown request URL: {method} {path}")
    if method != ("GET" if kind == "models" else "POST"):
        return await ex.send_error(405, None, f"Method {method} not allowed on {path}")

    status: int | None = beh.status
    if status is None and ex.fail_roll < beh.fail_rate:
        status = beh.fail_status
    if status is None and beh.error_code is not None:
        shape = ERROR_CODES.get(beh.error_code)
        status = 400 if shape is None else ex.fmt.error_status(shape)
    parsed = ex.parsed
    problem = ex.fmt.validate(ex.request.body, parsed) if kind == "chat" else None
    if beh.key_statuses and status is None:
        status = beh.key_statuses.get(_key_of(ex.request.headers))
    if ex.limits is not None and kind == "chat" and problem is None:
        if status is None and not ex.limits.admit(parsed, input_tokens(parsed)):
            status = ex.fmt.error_status(ERROR_CODES["rate_limit_exceeded"])
        ex.extra += ex.limits.headers(anthropic=ex.fmt is ANTHROPIC)
    stream = (
        kind == "chat"
        and problem is None
        and parsed.get("stream") is True
        and not beh.ignore_stream
    )
    ok = status is None or status < 400
    # A successful stream waits before its first chunk (in _stream); all else waits here.
    deferred = stream and ok and beh.malformed is None and beh.reset != "before_response"
    delay_ms = ex.jitter_ms + (
        beh.ttft_ms if stream and beh.ttft_ms is not None else beh.latency_ms
    )
    if delay_ms > 0 and not deferred:
        await asyncio.sleep(delay_ms / 1000)

    if beh.reset == "before_response":
        reset(ex.writer)
        return False

    if status is not None and status >= 400:
        if status in (429, 503, 529):
            if beh.retry_after is not None:
                ex.extra += b"retry-after: " + beh.retry_after.encode("latin-1") + b"\r\n"
            if beh.retry_after_ms is not None:
                ex.extra += b"retry-after-ms: " + str(beh.retry_after_ms).encode() + b"\r\n"
        return await ex.send_error(status, beh.error_code, None, mid_body=mid_body)
    status = status or 200

    if kind == "models":
        if beh.malformed is not None:
            return await _malformed(ex, False, _Reply("", 0, []))
        return await _models(ex, status)

    if problem is not None:
        return await ex.send_error(400, None, problem, mid_body=mid_body)
    refused = _refused_by_reasoning_model(ex.fmt, beh.reasoning_models, parsed)
    if refused is not None:
        return await ex.send_error(400, refused[0], refused[1], mid_body=mid_body)

    texts = reply_texts(beh)
    if beh.malformed == "not_utf8" and texts:
        texts = [_NOT_UTF8_MARK, *texts[1:]]
    reply = _Reply(str(parsed.get("model")), input_tokens(parsed), texts)
    if beh.malformed is not None and (beh.malformed != "not_utf8" or not stream):
        return await _malformed(ex, stream, reply)
    if stream:
        return await _stream(ex, reply, delay_ms, status)
    payload = ENCODER.encode(
        ex.fmt.completion(
            ex.n,
            reply.model,
            "".join(texts),
            reply.input_tokens,
            beh.output_tokens,
            extras_of(beh),
        )
    )
    return await ex.send(status, b"application/json", payload, mid_body=mid_body)


def _refused_by_reasoning_model(
    fmt: WireFormat, models: list[str], parsed: dict[str, Any]
) -> tuple[str, str] | None:
    """Return the (code, message) an OpenAI reasoning model answers a request with, or None."""
    if fmt is not OPENAI or parsed.get("model") not in models:
        return None
    if "max_tokens" in parsed:
        return (
            "unsupported_parameter",
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
        )
    for name in ("temperature", "top_p"):
        if name in parsed:
            return (
                "unsupported_value",
                f"Unsupported value: '{name}' does not support {parsed[name]!r} with this "
                "model. Only the default (1) value is supported.",
            )
    return None


def _key_of(headers: dict[str, str]) -> str:
    """Return the API key a request was sent with (either wire format's header)."""
    bearer = headers.get("authorization", "")
    return bearer[7:] if bearer.startswith("Bearer ") else headers.get("x-api-key", "")


async def _models(ex: Exchange, status: int) -> bool:
    items: list[dict[str, Any]] = [
        {
            "id": name,
            "object": "model",
            "created": 1_700_000_000,
            "owned_by": "routeledger-fake",
            "type": "model",
            "display_name": name,
            "created_at": "2023-11-14T22:13:20Z",
            "lifecycle": "active",
        }
        for name in ex.behaviour.models
    ]
    path = ex.request.path
    if path != "/v1/models":
        wanted = path.removeprefix("/v1/models/")
        found = [item for item in items if item["id"] == wanted]
        if not found:
            return await ex.send_error(404, "model_not_found", None)
        payload = ENCODER.encode(found[0])
    else:
        payload = ENCODER.encode(
            {
                "object": "list",
                "data": items,
                "has_more": False,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
            }
        )
    mid_body = ex.behaviour.reset == "mid_body"
    return await ex.send(status, b"application/json", payload, mid_body=mid_body)


async def _malformed(ex: Exchange, stream: bool, reply: _Reply) -> bool:
    beh = ex.behaviour
    kind = beh.malformed
    if kind == "html":
        return await ex.send(200, b"text/html; charset=utf-8", _HTML)
    if kind == "wrong_json":
        if stream:
            events = b"data: [1, 2, 3]\n\n" * 3 + ex.fmt.wrong_json_stream_end
            return await ex.send(200, b"text/event-stream", events)
        return await ex.send(200, b"application/json", _WRONG_JSON)
    if kind == "not_utf8":
        text = "".join(reply.texts)
        payload = ENCODER.encode(ex.fmt.completion(0, reply.model, text, 1, len(reply.texts)))
        payload = payload.replace(_NOT_UTF8_MARK.encode(), _NOT_UTF8)
        if _NOT_UTF8 not in payload:
            payload += _NOT_UTF8
        return await ex.send(200, b"application/json", payload)
    # "huge": a chunked body written piece by piece so neither side needs it in memory.
    ex.stats._status(200)
    writer = ex.writer
    ctype = b"text/event-stream" if stream else b"application/json"
    writer.write(head(200, ctype, length=None, close=True, extra=ex.extra))
    if stream:
        prefix = b'data: {"choices": [{"index": 0, "delta": {"content": "'
    else:
        prefix = b'{"object": "chat.completion", "choices": [{"message": {"content": "'
    writer.write(chunk(prefix))
    piece = chunk(b"x" * (1 << 20))
    for _ in range(max(1, beh.huge_bytes >> 20)):
        writer.write(piece)
        await writer.drain()
    writer.write(chunk(b'"}}]}\n\n' if stream else b'"}}]}'))
    writer.write(CHUNK_END)
    await writer.drain()
    return False


async def _stream(ex: Exchange, reply: _Reply, delay_ms: float, status: int) -> bool:
    beh = ex.behaviour
    pre, chunks, post, error_event = ex.fmt.stream(
        ex.n,
        reply.model,
        reply.texts,
        reply.input_tokens,
        beh.output_tokens,
        ex.parsed,
        extras_of(beh),
    )
    if beh.malformed == "not_utf8":
        mark = _NOT_UTF8_MARK.encode()
        chunks = [c.replace(mark, _NOT_UTF8) for c in chunks]
        if not chunks:
            pre = pre + b"data: " + _NOT_UTF8 + b"\n\n"
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    ex.stats._status(status)
    truncate = beh.truncate_after_chunks
    # A truncated stream closes the connection, so it must not be offered for reuse.
    closing = not ex.request.keep_alive or (truncate is not None and truncate <= len(chunks))
    response = head(
        status,
        b"text/event-stream; charset=utf-8",
        length=None,
        close=closing,
        extra=ex.extra + b"cache-control: no-cache\r\n",
    )
    writer = ex.writer

    if beh.reset == "mid_body":
        writer.write(response + chunk(pre + b"".join(chunks[:1])))
        await writer.drain()
        await reset_soon(writer)
        return False

    pending: list[bytes] = [response, chunk(pre)] if pre else [response]
    total = len(chunks)
    gap = beh.inter_token_ms / 1000

    async def flush() -> None:
        writer.write(b"".join(pending))
        pending.clear()
        await writer.drain()

    for k in range(total + 1):
        # k text chunks have been queued; act on the per-boundary behaviours.
        if k == beh.truncate_after_chunks:
            pending.append(CHUNK_END)
            await flush()
            return False
        if k == beh.error_event_after_chunks:
            pending.append(chunk(error_event))
            pending.append(CHUNK_END)
            await flush()
            return not closing
        if k == beh.stall_after_chunks and beh.stall_ms > 0:
            await flush()
            await asyncio.sleep(beh.stall_ms / 1000)
        if k == total:
            break
        if k > 0 and gap > 0:
            await flush()
            await asyncio.sleep(gap)
        pending.append(chunk(chunks[k]))
    pending.append(chunk(post))
    pending.append(CHUNK_END)
    await flush()
    return not closing
