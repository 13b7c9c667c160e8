"""The ``routeledger fake-provider`` command: serve a loopback fake provider until stopped."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

from routeledger.actors.wire import is_loopback
from routeledger.events import ConfigError
from routeledger.testing import Behaviour, FakeProvider

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``fake-provider`` sub-command to ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fake-provider",
        help="serve a loopback fake LLM provider (OpenAI and Anthropic formats)",
        description=(
            "Serve POST /v1/chat/completions (OpenAI), POST /v1/messages (Anthropic) and "
            "GET /v1/models on a loopback address until SIGINT or SIGTERM."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: pick a free one)")
    parser.add_argument(
        "--format",
        choices=("openai", "anthropic", "both"),
        default="both",
        help="informational: both formats are always served",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--ttft-ms", type=float, default=None)
    parser.add_argument("--inter-token-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--status", type=int, default=None, help="force this status")
    parser.add_argument("--retry-after", default=None, help="retry-after header on 429/503")
    parser.add_argument("--output-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    if not is_loopback(args.host):
        raise ConfigError(
            f"--host {args.host!r} is not a loopback address: the fake provider only serves "
            "on loopback (e.g. 127.0.0.1 or ::1)"
        )
    try:
        behaviour = Behaviour(
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            ttft_ms=args.ttft_ms,
            inter_token_ms=args.inter_token_ms,
            fail_rate=args.fail_rate,
            fail_status=args.fail_status,
            status=args.status,
            retry_after=args.retry_after,
            output_tokens=args.output_tokens,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with FakeProvider(behaviour, seed=args.seed, host=args.host, port=args.port) as fake:
            # Flushed at once: the parent process reads this line to learn the port.
            print(f"listening on {fake.url}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
