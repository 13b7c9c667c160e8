"""API keys go only where configured: into the provider's auth header, and nowhere else.

A canary key, given directly and through an environment variable, is run through successful
and failing requests (401, 500, connection refused), probes and the commands; it must never
appear in the database files, the logs, any exception, or any command's output.
"""

from __future__ import annotations

import logging
import sqlite3
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from chaos_support import Answer, ChaosServer, Seen, sse

from routeledger import (
    AllProvidersFailed,
    HealthConfig,
    Message,
    ModelSpec,
    ProviderConfig,
    Request,
    Requirements,
    RouteledgerError,
    Runtime,
    RuntimeConfig,
)
from routeledger.cli import main
from routeledger.testing import Behaviour, FakeProvider, no_backoff

CANARY = "sk-canary-9f8e7d"
KEY_VAR = "ROUTELEDGER_TEST_CANARY_KEY"
MODEL = "fake-model"


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeProvider]]:
    """Run fake providers: two healthy ones, one refusing the key (401), one failing (500)."""
    behaviours = {
        "openai-ok": Behaviour(),
        "anthropic-ok": Behaviour(),
        "auth": Behaviour(status=401),
        "down": Behaviour(status=500),
    }
    started = {name: FakeProvider(b, seed=0).start() for name, b in behaviours.items()}
    yield started
    for fake in started.values():
        fake.stop()


def closed_port_url() -> str:
    """Return a loopback base URL on which nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def provider(name: str, url: str, kind: str, **key: Any) -> ProviderConfig:
    """Return a provider serving ``fake-model`` with the key given as ``key``."""
    return ProviderConfig(
        name=name,
        kind=kind,
        base_url=url,
        models=[ModelSpec(name=MODEL, input_per_mtok=1.0, output_per_mtok=2.0)],
        timeout_s=5.0,
        **key,
    )


def request(**kwargs: Any) -> Request:
    """Return a one-message request."""
    return Request(
        model=MODEL, messages=[Message(role="user", content="hello")], max_tokens=8, **kwargs
    )


def texts_of(exc: BaseException) -> list[str]:
    """Return every text an exception shows: str, repr, traceback, chained causes, attempts."""
    out: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out += [str(e), repr(e), "".join(traceback.format_exception(e))]
        out += [repr(v) for v in vars(e).values()]
        pending += [e.__cause__, e.__context__, *getattr(e, "attempts", [])]
    return out


def database_bytes(db: Path) -> bytes:
    """Return the bytes of the database and its -wal and -shm files."""
    return b"".join(
        p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name) and p.is_file()
    )


def test_canary_key_is_sent_where_configured_and_appears_nowhere_else(
    tmp_path: Path,
    fakes: dict[str, FakeProvider],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The key reaches the auth headers only: not the log files, logs, errors or commands."""
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "events.sqlite"
    direct = {"api_key": CANARY}
    via_env = {"api_key_env": KEY_VAR}
    config = RuntimeConfig(
        providers=[
            provider("openai-ok", fakes["openai-ok"].url + "/v1", "openai", **direct),
            provider("anthropic-ok", fakes["anthropic-ok"].url + "/v1", "anthropic", **via_env),
            provider("auth", fakes["auth"].url + "/v1", "openai", **direct),
            provider("down", fakes["down"].url + "/v1", "anthropic", **via_env),
            provider("refused", closed_port_url(), "openai", **direct),
        ],
        failover=no_backoff(max_attempts=5),
        health=HealthConfig(failure_threshold=100, min_calls=100, window_size=100),
        seed=0,
    )
    errors: list[AllProvidersFailed] = []
    request_ids: list[str] = []
    with Runtime.start(
        config, event_log=db, environ={KEY_VAR: CANARY}, active_health_checks=False
    ) as rt:
        for name in ("openai-ok", "anthropic-ok"):
            response = rt.complete(request(), preferred_provider=name)
            assert response.provider == name
            request_ids.append(response.request_id)
        chunks = list(rt.stream(request(), preferred_provider="anthropic-ok"))
        assert chunks[-1].finish_reason is not None
        only_failing = Requirements(exclude_providers=["openai-ok", "anthropic-ok"])
        for stream in (False, True):
            req = request(stream=stream)
            request_ids.append(req.request_id)
            with pytest.raises(AllProvidersFailed) as info:
                if stream:
                    list(rt.stream(req, requirements=only_failing))
                else:
                    rt.complete(req, requirements=only_failing)
            errors.append(info.value)
        assert {type(e).__name__ for e in errors[0].attempts} >= {
            "AuthenticationError",
            "ProviderUnavailable",
            "ProviderConnectError",
        }
        probes = rt.health_check()
        assert not probes["refused"].healthy and not probes["auth"].healthy
        rt.flush()
        live_bytes = database_bytes(db)
        shown = [repr(config), str(config), repr(rt.get_provider("openai-ok")), repr(probes)]
    closed_bytes = database_bytes(db)

    # It was sent, and only in the header each format uses.
    assert fakes["openai-ok"].stats.last_request_headers["authorization"] == f"Bearer {CANARY}"
    assert fakes["anthropic-ok"].stats.last_request_headers["x-api-key"] == CANARY
    assert fakes["auth"].stats.last_request_headers["authorization"] == f"Bearer {CANARY}"
    assert fakes["down"].stats.last_request_headers["x-api-key"] == CANARY
    assert "authorization" not in fakes["anthropic-ok"].stats.last_request_headers

    canary = CANARY.encode()
    assert canary not in live_bytes and canary not in closed_bytes
    assert b"sk-canary" not in live_bytes + closed_bytes
    for text in [t for e in errors for t in texts_of(e)] + shown:
        assert CANARY not in text
    assert CANARY not in caplog.text
    for record in caplog.records:
        assert CANARY not in repr(record.args) and CANARY not in str(record.msg)

    capsys.readouterr()
    commands = [
        ["replay", "--db", str(db)],
        ["replay", "--db", str(db), "--json"],
        ["tail", "--db", str(db), "--no-follow"],
        ["tail", "--db", str(db), "--no-follow", "--json"],
    ]
    commands += [["audit", "--db", str(db), rid] for rid in request_ids]
    for argv in commands:
        assert main(argv) == 0, argv
        out = capsys.readouterr()
        assert out.out, argv
        assert CANARY not in out.out + out.err, argv


def test_key_from_environment_is_read_at_start_and_never_stored_in_the_config(
    tmp_path: Path, fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key named by api_key_env is read from the environment; the config holds only the name."""
    monkeypatch.setenv(KEY_VAR, CANARY)
    path = tmp_path / "routeledger.toml"
    path.write_text(
        f'[[providers]]\nname = "p"\nkind = "anthropic"\n'
        f'base_url = "{fakes["anthropic-ok"].url}/v1"\napi_key_env = "{KEY_VAR}"\n'
        f'models = [{{ name = "{MODEL}" }}]\n'
    )
    config = RuntimeConfig.from_toml(path)
    assert CANARY not in repr(config)
    db = tmp_path / "events.sqlite"
    with Runtime.start(config, event_log=db, active_health_checks=False) as rt:
        assert rt.complete(request()).provider == "p"
    assert fakes["anthropic-ok"].stats.last_request_headers["x-api-key"] == CANARY
    assert CANARY.encode() not in database_bytes(db)


# --- a provider that echoes the key inside 200 answers -----------------------------------------

ECHO_MODELS = ("error200", "stream-error", "late-error", "echo")
"""What the echoing server does, chosen by the model asked for."""


def _echo_key(seen: Seen) -> str:
    auth = seen.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth else seen.headers.get("x-api-key", "")


def echoing_script(seen: Seen) -> Answer:
    """Answer 200 with the caller's key in every provider-supplied text a format has."""
    key = _echo_key(seen)
    body = msgspec.json.decode(seen.body) if seen.body else {}
    mode, stream = body.get("model"), bool(body.get("stream"))
    anthropic = seen.path.endswith("/messages")
    json = {"content-type": "application/json"}
    events = {"content-type": "text/event-stream"}
    if anthropic:
        error = {"type": "overloaded_error", "message": f"key {key} is not welcome"}
        start = {"message": {"model": f"claude-{key}", "usage": {"input_tokens": 1}}}
        text = {"index": 0, "delta": {"type": "text_delta", "text": "ok"}}
        stop = {"delta": {"stop_reason": f"end-{key}"}, "usage": {"output_tokens": 1}}
        ok_events = [
            f"event: message_start\ndata: {msgspec.json.encode(start).decode()}",
            f"event: content_block_delta\ndata: {msgspec.json.encode(text).decode()}",
            f"event: message_delta\ndata: {msgspec.json.encode(stop).decode()}",
            "event: message_stop\ndata: {}",
        ]
        error_event = f"event: error\ndata: {msgspec.json.encode({'error': error}).decode()}"
        ok_body = {
            "model": f"claude-{key}",
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": f"end-{key}",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        error_body = {"type": "error", "error": {**error, "type": f"api_error_{key}"}}
    else:
        error = {"message": f"Incorrect API key provided: {key}", "code": f"code-{key}"}
        chunk = {"model": f"gpt-{key}", "choices": [{"delta": {"content": "ok"}}]}
        last = {"model": f"gpt-{key}", "choices": [{"delta": {}, "finish_reason": f"x-{key}"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        ok_events = [msgspec.json.encode(c).decode() for c in (chunk, last, usage)] + ["[DONE]"]
        error_event = msgspec.json.encode({"error": error}).decode()
        ok_body = {
            "model": f"gpt-{key}",
            "choices": [{"message": {"content": "ok"}, "finish_reason": f"x-{key}"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }
        error_body = {"error": error}
    if mode == "echo" and stream:
        return Answer(200, events, sse(*ok_events))
    if mode == "echo":
        return Answer(200, json, [msgspec.json.encode(ok_body)])
    if mode == "late-error" and stream:
        return Answer(200, events, sse(ok_events[0], ok_events[1], error_event))
    if stream:
        return Answer(200, events, sse(error_event))
    return Answer(200, json, [msgspec.json.encode(error_body)])


def test_key_echoed_inside_200_answers_reaches_no_error_log_or_command(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key echoed in 200 error bodies, stream error events, model or finish reason is redacted."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_VAR, CANARY)
    db = tmp_path / "events.sqlite"
    models = [ModelSpec(name=m, input_per_mtok=1.0, output_per_mtok=2.0) for m in ECHO_MODELS]
    kinds = ("openai", "anthropic")
    with ChaosServer(echoing_script) as server:
        config = RuntimeConfig(
            providers=[
                ProviderConfig(
                    name=kind, kind=kind, base_url=server.url, models=models, api_key=CANARY
                )
                for kind in kinds
            ],
            failover=no_backoff(max_attempts=2),
            health=HealthConfig(failure_threshold=100, min_calls=100, window_size=100),
            seed=0,
        )
        errors: list[BaseException] = []
        shown: list[str] = []
        request_ids: list[str] = []
        with Runtime.start(config, event_log=db, active_health_checks=False) as rt:
            for kind in kinds:
                only = Requirements(exclude_providers=[k for k in kinds if k != kind])
                for mode in ECHO_MODELS:
                    for stream in (False, True):
                        req = Request(
                            model=mode, messages=[Message(role="user", content="hi")], stream=stream
                        )
                        request_ids.append(req.request_id)
                        try:
                            if stream:
                                chunks = list(rt.stream(req, requirements=only))
                                shown += [repr(c) for c in chunks]
                            else:
                                shown.append(repr(rt.complete(req, requirements=only)))
                        except RouteledgerError as exc:
                            errors.append(exc)
            rt.flush()
            live_bytes = database_bytes(db)
        closed_bytes = database_bytes(db)

        # Every error mode failed and the echo mode served, in both formats.
        assert len(errors) == len(kinds) * (len(ECHO_MODELS) - 1) * 2, errors
        assert any(type(e).__name__ == "StreamInterrupted" for e in errors)
        assert any("***" in t for e in errors for t in texts_of(e))
        assert b"***" in live_bytes  # the echoed model and finish reason, redacted

        toml = tmp_path / "routeledger.toml"
        toml.write_text(
            f'[[providers]]\nname = "p"\nkind = "openai"\nbase_url = "{server.url}"\n'
            f'api_key_env = "{KEY_VAR}"\n'
            + "models = ["
            + ", ".join(f'{{ name = "{m}" }}' for m in ECHO_MODELS)
            + "]\n"
        )
        capsys.readouterr()
        outputs: list[str] = []
        for mode in ECHO_MODELS:
            for stream in (["--stream"], []):
                main(["complete", "--config", str(toml), "--model", mode, *stream, "hi"])
                out = capsys.readouterr()
                outputs.append(out.out + out.err)
        assert any("***" in o for o in outputs)

    canary = CANARY.encode()
    assert canary not in live_bytes and canary not in closed_bytes
    for text in [t for e in errors for t in texts_of(e)] + shown + outputs:
        assert CANARY not in text
    assert CANARY not in caplog.text
    commands = [
        ["replay", "--db", str(db)],
        ["tail", "--db", str(db), "--no-follow"],
        ["tail", "--db", str(db), "--no-follow", "--json"],
    ]
    commands += [["audit", "--db", str(db), rid] for rid in request_ids]
    commands += [["audit", "--db", str(db), "--json", rid] for rid in request_ids]
    for argv in commands:
        assert main(argv) == 0, argv
        out = capsys.readouterr()
        assert CANARY not in out.out + out.err, argv


def test_a_password_in_base_url_reaches_neither_the_log_nor_errors(tmp_path: Path) -> None:
    """config.applied stores base_url with its password masked; the adapter's repr masks it."""
    from routeledger.actors.wire import make_adapter

    password = "pw-canary-3e2d1c"
    provider = ProviderConfig(
        name="a",
        kind="openai",
        base_url=f"http://me:{password}@127.0.0.1:9/v1",
        models=[ModelSpec(name="m")],
    )
    db = tmp_path / "events.sqlite"
    with Runtime.start(
        RuntimeConfig(providers=[provider]), event_log=db, active_health_checks=False
    ) as rt:
        rt.flush()
    assert password.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute("SELECT data FROM events WHERE type = 'config.applied'").fetchone()
    conn.close()
    summary = msgspec.json.decode(data)["summary"]
    assert summary["providers"][0]["base_url"] == "http://me:***@127.0.0.1:9/v1"
    assert password not in repr(make_adapter(provider))
