"""Several daemons on one log: the ``shared_log`` fixture and daemon processes to drive.

``shared_log`` yields the address of a fresh event log that several processes may share.
Today it is a SQLite file; the PostgreSQL store adds its URL as a second parameter, so no
multi-daemon test may assume SQLite beyond this fixture (read the log with ``replay`` or
``open_log``-style helpers that take an address, never ``sqlite3``).

Each daemon is a real process (``python -m routeledger._daemon``) answering JSON commands;
see that module for the commands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from routeledger import RuntimeConfig

__all__ = ["Daemon", "daemons", "shared_log", "start_daemons"]

ANSWER_TIMEOUT_S = 20.0


@pytest.fixture(params=["sqlite", "postgres"])
def shared_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield the address of a fresh event log several processes may share: a SQLite file, or
    a fresh schema on the test PostgreSQL server (skipped without one, failed under CI)."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.sqlite")
        return
    from pg_support import fresh_url

    with fresh_url() as url:
        yield url


class Daemon:
    """One daemon process on the shared log, driven by JSON commands."""

    def __init__(self, log: str, config: RuntimeConfig) -> None:
        env = dict(os.environ)
        env.pop("COVERAGE_PROCESS_START", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "routeledger._daemon",
                "--db",
                log,
                "--config",
                msgspec.json.encode(msgspec.to_builtins(config, enc_hook=str)).decode(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.id = ""

    def ready(self) -> str:
        """Wait for the daemon to serve; return its id."""
        self.id = str(self._read()["ready"])
        return self.id

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        # The daemon answers every command; a dead one ends the stream (readline gives "").
        line = self.proc.stdout.readline()
        assert line, f"daemon exited with {self.proc.wait(timeout=ANSWER_TIMEOUT_S)}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, op: str, **args: Any) -> None:
        """Send a command without waiting for its answer (read it with :meth:`answer`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        """Return the answer of the oldest command sent and not yet answered."""
        answer = self._read()
        assert "error" not in answer, answer["error"]
        return answer

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command and return its answer."""
        self.send(op, **args)
        return self.answer()

    def kill(self) -> None:
        """Kill the process at once (no close, no last heartbeat)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=ANSWER_TIMEOUT_S)

    def stop(self) -> None:
        """Close the daemon's runtime and wait for the process to end."""
        if self.proc.poll() is None:
            try:
                self.ask("close")
            except (AssertionError, BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=ANSWER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def start_daemons(log: str, configs: list[RuntimeConfig]) -> list[Daemon]:
    """Start one daemon per configuration on ``log``, in parallel; return them serving."""
    started = [Daemon(log, config) for config in configs]
    for daemon in started:
        daemon.ready()
    return started


@pytest.fixture
def daemons(shared_log: str) -> Iterator[Callable[..., list[Daemon]]]:
    """Return a starter ``daemons(config, n)`` of daemons on ``shared_log``; all stop after."""
    running: list[Daemon] = []

    def start(config: RuntimeConfig, n: int) -> list[Daemon]:
        out = start_daemons(shared_log, [config] * n)
        running.extend(out)
        return out

    yield start
    for daemon in running:
        daemon.stop()
