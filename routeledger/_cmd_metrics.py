"""The ``routeledger metrics`` command: serve Prometheus metrics folded from an event log.

``routeledger metrics --db FILE --port N [--host 127.0.0.1]`` serves ``/metrics`` for a daemon
that does not expose its figures itself. The log is opened read-only and each scrape folds the
events appended since the previous one, so the figures follow the writer and equal
``replay(FILE)`` at the position they report (``routeledger_log_position``). Figures that live
only in the writer's memory (requests in flight, the writer's backlog) are not served.
Needs the ``prometheus`` extra.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

from routeledger.events import ConfigError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``metrics`` sub-command to ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "metrics",
        help="serve Prometheus metrics folded from an event log",
        description=(
            "Serve GET /metrics (Prometheus text format) with the figures of an event log, "
            "re-read at each scrape so they follow a running writer, until SIGINT or SIGTERM."
        ),
    )
    parser.add_argument(
        "--db", required=True, metavar="FILE", help="the SQLite event log or a postgresql:// URL"
    )
    parser.add_argument(
        "--port", type=int, required=True, metavar="N", help="port to bind (0: pick a free one)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise ConfigError(
            "the metrics command needs the prometheus extra: pip install 'routeledger[prometheus]'"
        ) from None
    from routeledger.prometheus import LogCollector
    from routeledger.store import shown_target

    collector = LogCollector(args.db)  # a missing or unreadable file fails here, before serving
    registry = CollectorRegistry()
    registry.register(collector)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server, thread = start_http_server(args.port, addr=args.host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve on {args.host}:{args.port}: {exc}") from exc
        port = int(server.server_address[1])
        host = f"[{args.host}]" if ":" in args.host else str(args.host)
        # Flushed at once: a parent process reads this line to learn the port.
        print(f"serving {shown_target(args.db)} on http://{host}:{port}/metrics", flush=True)
        while not stop.wait(0.5):
            pass
        server.shutdown()
        server.server_close()
        thread.join(5.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        collector.close()
    return 0
