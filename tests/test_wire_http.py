"""Tests of the HTTP base adapter: redirects, timeouts, bounded reads, the key, the client."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import msgspec
import pytest
from wire_support import (
    CALLS,
    CANARY,
    KINDS,
    MODEL,
    Adapters,
    FailingBody,
    answer,
    call,
    config,
    request,
)

from routeledger.actors.wire import WireAdapter, decode_answer, make_adapter, make_client
from routeledger.events import ProtocolError, ProviderUnavailable, RateLimited, Secret


@pytest.fixture
def adapter() -> Iterator[Callable[..., WireAdapter]]:
    """Return a factory of adapters over a MockTransport; closes their clients."""
    adapters = Adapters()
    yield adapters
    adapters.close()


# -- redirects and the key's origin ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_redirect_never_followed(adapter: Callable[..., WireAdapter], kind: str) -> None:
    """A redirect is a ProtocolError and the key never goes to the other origin."""
    seen: list[httpx.URL] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r.url)
        return httpx.Response(307, headers={"location": "https://evil.test/steal"})

    # Even a shared client configured to follow redirects does not follow them for us.
    a = adapter(kind, handler, follow_redirects=True)
    for how in CALLS:
        with pytest.raises(ProtocolError):
            call(a, how)
    assert {u.host for u in seen} == {"provider.test"}


def test_timeout_reaches_the_transport(adapter: Callable[..., WireAdapter]) -> None:
    """timeout_s overrides the configured timeout; connect keeps its own, smaller budget."""
    seen: list[dict[str, float]] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r.extensions["timeout"])
        return httpx.Response(200, json={"data": []})

    a = adapter("openai", handler, timeout_s=60.0, connect_timeout_s=5.0)
    a.probe()
    a.probe(timeout_s=2.0)
    a.probe(timeout_s=30.0)
    assert seen == [
        {"connect": 5.0, "read": 60.0, "write": 60.0, "pool": 5.0},
        {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0},
        {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 5.0},
    ]


# -- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["complete", "probe"])
@pytest.mark.parametrize("kind", KINDS)
def test_body_cap(adapter: Callable[..., WireAdapter], kind: str, how: str) -> None:
    """A body over max_response_bytes is a ProtocolError, declared or streamed."""
    big = b"x" * 5000

    def declared(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=big, headers={"content-type": "application/json"})

    def chunked(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=FailingBody(big, httpx.ReadError("x", request=r)))

    for handler in (declared, chunked):
        with pytest.raises(ProtocolError, match="limit"):
            call(adapter(kind, handler, max_response_bytes=1000), how)


@pytest.mark.parametrize("kind", KINDS)
def test_stream_line_cap(adapter: Callable[..., WireAdapter], kind: str) -> None:
    """An SSE line over max_line_bytes is a ProtocolError."""
    body = b"data: " + b"x" * 5000 + b"\n\n"

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with pytest.raises(ProtocolError):
        call(adapter(kind, handler, max_line_bytes=1000), "stream")


@pytest.mark.parametrize("kind", KINDS)
def test_stream_not_utf8(adapter: Callable[..., WireAdapter], kind: str) -> None:
    """An event stream with bytes that are not UTF-8 is a ProtocolError."""

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, content=b"data: \xc3\x28\xff\n\n", headers={"content-type": "text/event-stream"}
        )

    with pytest.raises(ProtocolError):
        call(adapter(kind, handler), "stream")


def test_huge_error_body_read_partially(adapter: Callable[..., WireAdapter]) -> None:
    """An enormous error body is not read whole; the status still classifies it."""
    a = adapter(
        "openai", answer(500, {"error": {"message": "y" * 200_000}}), max_response_bytes=1000
    )
    with pytest.raises(ProviderUnavailable):
        a.complete(request(), MODEL)


def test_key_goes_in_the_header_only(adapter: Callable[..., WireAdapter]) -> None:
    """The key is sent in its header and nowhere else in the request."""
    sent: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        r.read()
        sent.append(r)
        return httpx.Response(500)

    for kind in KINDS:
        with pytest.raises(ProviderUnavailable):
            adapter(kind, handler).complete(request(), MODEL)
    assert sent[0].headers["authorization"] == f"Bearer {CANARY}"
    assert sent[1].headers["x-api-key"] == CANARY
    for r in sent:
        assert CANARY not in str(r.url)
        assert CANARY.encode() not in r.content


# -- decoding an answer ----------------------------------------------------------------


class _Answer(msgspec.Struct):
    text: str


ANSWER = msgspec.json.Decoder(_Answer)


def test_decode_answer_returns_the_typed_answer() -> None:
    """A body of the expected shape decodes to the format's type."""
    assert decode_answer(
        ANSWER, b'{"text": "hi"}', what="an answer", provider="p", request_id="r"
    ) == _Answer(text="hi")


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"text": 3}', b"\xff"])
def test_decode_answer_of_the_wrong_shape_is_a_protocol_error(body: bytes) -> None:
    """A body that is not the expected answer is a ProtocolError naming what was expected."""
    with pytest.raises(ProtocolError, match="answer is not an answer") as info:
        decode_answer(ANSWER, body, what="an answer", provider="p", request_id="r")
    assert (info.value.provider, info.value.request_id, info.value.status) == ("p", "r", 200)


def test_decode_answer_of_an_error_object_raises_the_error_it_stands_for() -> None:
    """A 200 body holding an error object is classified like that error sent as a status."""
    body = b'{"error": {"type": "rate_limit_error", "message": "slow down"}}'
    with pytest.raises(RateLimited, match="slow down") as info:
        decode_answer(ANSWER, body, what="an answer", provider="p", request_id="r")
    assert (info.value.provider, info.value.request_id) == ("p", "r")


# -- construction --------------------------------------------------------------------------


def test_make_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client keeps max_concurrency connections alive (the budget, not the pool, caps
    concurrency), never follows redirects, and ignores env proxies."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with make_client(config("openai", max_concurrency=7, timeout_s=12.0)) as client:
        assert client.follow_redirects is False
        assert client.trust_env is False
        assert client.timeout == httpx.Timeout(12.0, connect=5.0, pool=5.0)
        pool = client._transport._pool  # type: ignore[attr-defined]  # httpx internals
        assert pool._max_connections > 1_000_000  # no cap of its own
        assert pool._max_keepalive_connections == 7
        assert not client._mounts


def test_adapter_owns_client_it_made() -> None:
    """An adapter made without a client closes the one it made."""
    a = make_adapter(config("anthropic"), api_key=Secret(CANARY))
    # make_adapter returns the adapter protocol; the client and close() are the base class's.
    client = a._client  # type: ignore[attr-defined]
    a.close()  # type: ignore[attr-defined]
    assert client.is_closed


def test_api_key_defaults_to_config() -> None:
    """Without api_key the adapter sends config.resolve_api_key()."""
    seen: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, json={"data": []})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        cfg = config("openai", api_key_env="ROUTELEDGER_TEST_KEY")
        cfg.api_key = Secret("from-config")
        make_adapter(cfg, client=client).probe()
    assert seen[0].headers["authorization"] == "Bearer from-config"
