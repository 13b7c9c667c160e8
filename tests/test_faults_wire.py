"""Hostile answers on the wire: compression bombs, odd encodings, control characters.

A scripted loopback server (``tests/chaos_support.py``) sends the bytes; the real adapters read
them over a real socket, and ``tracemalloc`` measures the peak of what the read allocated.
"""

from __future__ import annotations

import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from chaos_support import Answer, ChaosServer, Seen, compressed_zeros, sse

from routeledger import HealthConfig, RouteledgerError, Runtime, RuntimeConfig
from routeledger.actors.wire import make_adapter
from routeledger.cli import main
from routeledger.events import (
    Message,
    ModelSpec,
    ProtocolError,
    ProviderConfig,
    ProviderError,
    Request,
    Secret,
)
from routeledger.testing import no_backoff

MODEL = ModelSpec(name="m", input_per_mtok=1.0, output_per_mtok=2.0)
LIMIT = 1024 * 1024
BOMB_SIZE = 256 * 1024 * 1024
"""256 MiB of zeros: about 250 KB gzipped, 256 times the body limit."""
PEAK_LIMIT = 24 * 1024 * 1024
"""What one bounded read may allocate at its peak: the limit and change, far below the bomb."""


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Return the bomb in each encoding, compressed once for the module."""
    return {
        "gzip": compressed_zeros(BOMB_SIZE, wbits=31),
        "deflate": compressed_zeros(BOMB_SIZE, wbits=15),
    }


def adapter(url: str, kind: str = "openai") -> Any:
    """Return a real adapter (own httpx client) on ``url`` with a 1 MiB body limit."""
    config = ProviderConfig(
        name="chaos",
        kind=kind,
        base_url=url,
        models=[MODEL],
        timeout_s=30.0,
        max_response_bytes=LIMIT,
        max_line_bytes=64 * 1024,
    )
    return make_adapter(config, api_key=Secret("sk-test-bomb"))


def request() -> Request:
    """Return a one-message request."""
    return Request(model="m", messages=[Message(role="user", content="hi")], max_tokens=8)


def serve(body: bytes, *, status: int, encoding: str, stream: bool) -> ChaosServer:
    """Return a server answering every request with ``body`` under ``encoding``."""
    ctype = "text/event-stream" if stream else "application/json"

    def script(seen: Seen) -> Answer:
        headers = {"content-type": ctype, "content-encoding": encoding}
        return Answer(status, headers, (body[i : i + 65536] for i in range(0, len(body), 65536)))

    return ChaosServer(script)


def peak_of(call: Any) -> tuple[BaseException, int]:
    """Run ``call``, which must raise; return its error and the peak traced allocation."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(ProviderError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return info.value, peak


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("call", ["complete", "stream", "error"])
def test_compression_bomb_is_refused_while_memory_stays_near_the_limit(
    bombs: dict[str, bytes], encoding: str, call: str
) -> None:
    """A bomb body, stream or error body is cut off as it decodes: peak memory ~ the limit."""
    status = 500 if call == "error" else 200
    with serve(bombs[encoding], status=status, encoding=encoding, stream=call == "stream") as srv:
        wire = adapter(srv.url)
        try:
            if call == "stream":
                error, peak = peak_of(lambda: list(wire.stream(request(), MODEL)))
            else:
                error, peak = peak_of(lambda: wire.complete(request(), MODEL))
        finally:
            wire.close()
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB"
    if call == "complete":
        assert isinstance(error, ProtocolError)
        assert "exceeds the limit" in str(error)
    elif call == "stream":
        assert isinstance(error, ProtocolError)
    else:
        assert error.status == 500  # the status classifies it; the bomb only cost a prefix


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity"])
def test_compressed_answers_within_the_limit_are_decoded(encoding: str) -> None:
    """An ordinary answer in each supported encoding is decoded and parsed."""
    body = (
        b'{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    )
    wbits = {"gzip": 31, "deflate": 15}.get(encoding)
    if wbits is not None:
        c = zlib.compressobj(6, zlib.DEFLATED, wbits)
        body = c.compress(body) + c.flush()
    with serve(body, status=200, encoding=encoding, stream=False) as srv:
        wire = adapter(srv.url)
        try:
            response = wire.complete(request(), MODEL)
        finally:
            wire.close()
        assert srv.seen[0].headers["accept-encoding"] == "gzip, deflate"
    assert response.content == "ok"


def test_raw_deflate_without_zlib_header_is_decoded() -> None:
    """Some servers send ``deflate`` as a raw stream; it is decoded as well."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(b'{"choices":[{"message":{"content":"raw"}}]}') + c.flush()
    with serve(body, status=200, encoding="deflate", stream=False) as srv:
        wire = adapter(srv.url)
        try:
            assert wire.complete(request(), MODEL).content == "raw"
        finally:
            wire.close()


@pytest.mark.parametrize("encoding", ["compress", "br", "gzip, snappy"])
def test_unknown_content_encoding_is_a_clear_protocol_error(encoding: str) -> None:
    """An encoding we did not offer is refused by name, not parsed as garbage."""
    with serve(b"\x00\x01garbage", status=200, encoding=encoding, stream=False) as srv:
        wire = adapter(srv.url)
        try:
            with pytest.raises(ProtocolError, match="content-encoding") as info:
                wire.complete(request(), MODEL)
        finally:
            wire.close()
    assert encoding.split(",")[-1].strip() in str(info.value)


def test_corrupt_gzip_body_is_a_protocol_error() -> None:
    """Bytes that are not gzip under ``content-encoding: gzip`` are a malformed answer."""
    with serve(b"this is not gzip at all", status=200, encoding="gzip", stream=False) as srv:
        wire = adapter(srv.url)
        try:
            with pytest.raises(ProtocolError):
                wire.complete(request(), MODEL)
        finally:
            wire.close()


# --- control characters in provider texts ------------------------------------------------------

CONTROLS = {
    "\x1b": "\\x1b",
    "\x07": "\\x07",
    "\x00": "\\x00",
    "\x08": "\\x08",
    "\x7f": "\\x7f",
    "\x9b": "\\x9b",
    "\u202e": "\\u202e",
    "\u2066": "\\u2066",
    "\u200f": "\\u200f",
}
"""Each character a terminal or a reader could be fooled by, and how it must be shown."""
HOSTILE = "evil" + "".join(CONTROLS) + "[31mred"
MODES = ("status401", "error200", "stream-error", "echo")


def hostile_script(seen: Seen) -> Answer:
    """Answer with HOSTILE in the error message, the model and the finish reason."""
    body = msgspec.json.decode(seen.body) if seen.body else {}
    mode, stream = body.get("model"), bool(body.get("stream"))
    json = {"content-type": "application/json"}
    error = msgspec.json.encode({"error": {"message": f"bad {HOSTILE}", "type": "server_error"}})
    if mode == "status401":
        return Answer(401, json, [error])
    if mode == "echo" and stream:
        chunk = {"model": f"m-{HOSTILE}", "choices": [{"delta": {"content": "ok"}}]}
        last = {"choices": [{"delta": {}, "finish_reason": f"f-{HOSTILE}"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        events = [msgspec.json.encode(c).decode() for c in (chunk, last, usage)]
        return Answer(200, {"content-type": "text/event-stream"}, sse(*events, "[DONE]"))
    if mode == "echo":
        ok = {
            "model": f"m-{HOSTILE}",
            "choices": [{"message": {"content": "ok"}, "finish_reason": f"f-{HOSTILE}"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }
        return Answer(200, json, [msgspec.json.encode(ok)])
    if stream:
        return Answer(200, {"content-type": "text/event-stream"}, sse(error.decode()))
    return Answer(200, json, [error])


def assert_escaped(text: str, what: str) -> None:
    """Fail if ``text`` holds any raw control character."""
    raw = [hex(ord(c)) for c in CONTROLS if c in text]
    assert not raw, f"{what} shows raw {raw}: {text!r}"


def test_control_characters_from_a_provider_are_shown_escaped_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Control and bidi characters in provider texts reach errors and commands only escaped."""
    db = tmp_path / "events.sqlite"
    models = [ModelSpec(name=m, input_per_mtok=1.0, output_per_mtok=2.0) for m in MODES]
    with ChaosServer(hostile_script) as server:
        config = RuntimeConfig(
            providers=[ProviderConfig(name="p", kind="openai", base_url=server.url, models=models)],
            failover=no_backoff(max_attempts=1),
            health=HealthConfig(failure_threshold=100, min_calls=100, window_size=100),
            seed=0,
        )
        errors: list[RouteledgerError] = []
        answers: list[str] = []
        request_ids: list[str] = []
        with Runtime.start(config, event_log=db, active_health_checks=False) as rt:
            for mode in MODES:
                for stream in (False, True):
                    req = Request(model=mode, messages=[Message(role="user", content="hi")])
                    request_ids.append(req.request_id)
                    try:
                        if stream:
                            chunks = list(rt.stream(req))
                            answers += [f"{c.model} {c.finish_reason}" for c in chunks]
                        else:
                            r = rt.complete(req)
                            answers.append(f"{r.model} {r.finish_reason}")
                    except RouteledgerError as exc:
                        errors.append(exc)
        toml = tmp_path / "routeledger.toml"
        toml.write_text(
            f'[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "{server.url}"\n'
            + "models = ["
            + ", ".join(f'{{ name = "{m}" }}' for m in MODES)
            + "]\n"
        )
        capsys.readouterr()
        for mode in MODES:
            for stream in (["--stream"], []):
                main(["complete", "--config", str(toml), "--model", mode, *stream, "hi"])
                out = capsys.readouterr()
                assert_escaped(out.out + out.err, f"complete {mode} {stream}")

    assert len(errors) == 6 and len(answers) >= 2
    for exc in errors:
        texts = [str(exc), repr(exc), *(str(a) for a in getattr(exc, "attempts", []))]
        for text in texts:
            assert_escaped(text, "an error")
        assert any("\\x1b" in t and "\\u202e" in t for t in texts)  # visible, not dropped
    for text in answers:
        assert_escaped(text, "an answer")
        assert "\\x1b" in text
    commands = [
        ["replay", "--db", str(db)],
        ["replay", "--db", str(db), "--json"],
        ["tail", "--db", str(db), "--no-follow"],
        ["tail", "--db", str(db), "--no-follow", "--json"],
    ]
    commands += [["audit", "--db", str(db), rid] for rid in request_ids]
    commands += [["audit", "--db", str(db), "--json", rid] for rid in request_ids]
    for argv in commands:
        assert main(argv) == 0, argv
        out = capsys.readouterr()
        assert_escaped(out.out + out.err, " ".join(argv[:2]))


def test_control_characters_already_in_a_log_are_escaped_by_every_printer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log written before escaping (raw controls stored) still prints escaped."""
    from routeledger.events import AttemptFailed, RequestCompleted, RequestFailed
    from routeledger.store import SQLiteStore

    db = tmp_path / "old.sqlite"
    store = SQLiteStore(db)
    rid = "r1"
    store.append(
        [
            AttemptFailed(
                ts=1.0,
                request_id=rid,
                attempt=1,
                provider="p",
                model=f"m{HOSTILE}",
                error="ProviderUnavailable",
                message=f"bad {HOSTILE}",
                latency_ms=1.0,
            ),
            RequestFailed(
                ts=2.0,
                request_id=rid,
                model=f"m{HOSTILE}",
                error="AllProvidersFailed",
                attempts=1,
                message=f"bad {HOSTILE}",
                latency_ms=1.0,
            ),
            RequestCompleted(
                ts=3.0,
                request_id="r2",
                provider="p",
                model=f"m{HOSTILE}",
                attempts=1,
                latency_ms=1.0,
                finish_reason=f"f{HOSTILE}",
                input_tokens=1,
                output_tokens=1,
            ),
        ]
    )
    store.close()
    capsys.readouterr()
    for argv in (
        ["replay", "--db", str(db)],
        ["replay", "--db", str(db), "--json"],
        ["tail", "--db", str(db), "--no-follow"],
        ["tail", "--db", str(db), "--no-follow", "--json"],
        ["audit", "--db", str(db), rid],
        ["audit", "--db", str(db), "r2"],
        ["audit", "--db", str(db), "--json", rid],
    ):
        assert main(argv) == 0, argv
        out = capsys.readouterr()
        assert_escaped(out.out + out.err, " ".join(argv[:2]))
