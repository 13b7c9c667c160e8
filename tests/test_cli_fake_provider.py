"""Tests of the ``routeledger fake-provider`` command (routeledger._cmd_fake)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fake_support import (
    OPENAI_BODY,
)

from routeledger.cli import main

ROUTELEDGER = Path(sys.executable).with_name("routeledger")


def test_cli_serves_until_terminated() -> None:
    """`routeledger fake-provider` prints its URL, answers, and exits on SIGTERM."""
    proc = subprocess.Popen(
        [str(ROUTELEDGER), "fake-provider", "--port", "0", "--output-tokens", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        r = httpx.post(url + "/v1/chat/completions", json=OPENAI_BODY, timeout=5)
        assert r.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_cli_refuses_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    """`fake-provider --host 0.0.0.0` is refused with a clear error."""
    assert main(["fake-provider", "--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
