"""A small daemon for trying several runtimes on one log: ``python -m routeledger._daemon``.

It starts one :class:`~routeledger.Runtime` on ``--db`` with the configuration ``--config``
(a JSON object, as ``RuntimeConfig.from_dict`` takes it) and answers commands, one JSON
object a line on stdin, with one JSON object a line on stdout. The multi-process tests and
``scripts/bench.py`` drive it; it is no public interface. Commands (``op``):

- ``burst``: ``n`` requests (``model``, optional ``preferred``) on ``threads`` threads;
  answers ``{"ok": .., "failed": .., "errors": {name: count}}``.
- ``route``: the provider ``route_request`` picks now (nothing is sent); ``{"provider": ..}``.
- ``flush``: ``rt.flush()``; ``{"position": ..}`` (the last position folded).
- ``metrics``: ``rt.get_metrics()`` as plain data.
- ``health``: each provider's circuit state.
- ``shared``: ``rt.get_shared_log()`` as ``{"daemon", "peers", "leader", "caps"}``.
- ``close``: closes the runtime and exits.

Errors of a command are answered as ``{"error": "..."}``; the daemon keeps serving.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from routeledger._runtime import Runtime
from routeledger.events import Message, Request, RouteledgerError, RuntimeConfig

__all__ = ["main", "serve"]


def _burst(rt: Runtime, command: dict[str, Any]) -> dict[str, Any]:
    n, threads = int(command.get("n", 1)), int(command.get("threads", 1))
    model, preferred = str(command.get("model", "fake-model")), command.get("preferred")

    def one(_: int) -> str | None:
        request = Request(model=model, messages=[Message(role="user", content="hi")])
        try:
            rt.complete(request, preferred_provider=preferred)
        except RouteledgerError as exc:
            return type(exc).__name__
        return None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        outcomes = list(pool.map(one, range(n)))
    errors = Counter(e for e in outcomes if e is not None)
    return {"ok": n - sum(errors.values()), "failed": sum(errors.values()), "errors": errors}


def handle(rt: Runtime, command: dict[str, Any]) -> dict[str, Any]:
    """Answer one command (see the module docstring)."""
    op = command.get("op")
    if op == "burst":
        return _burst(rt, command)
    if op == "route":
        model = str(command.get("model", "fake-model"))
        route = rt.route_request(Request(model=model, messages=[Message(role="user", content="")]))
        return {"provider": route.provider}
    if op == "flush":
        rt.flush()
        return {"position": rt._describe_log().position}
    if op == "metrics":
        metrics: dict[str, Any] = msgspec.to_builtins(rt.get_metrics())
        return metrics
    if op == "health":
        return {name: h.state for name, h in rt.get_provider_health().items()}
    if op == "shared":
        view = rt.get_shared_log()
        return {
            "daemon": view.daemon,
            "peers": view.peers,
            "leader": view.leader,
            "caps": view.slots,
        }
    raise ValueError(f"unknown op {op!r}")


def serve(rt: Runtime, lines: Any, out: Any) -> None:
    """Answer each command line of ``lines`` on ``out`` until ``close`` or the end."""
    for line in lines:
        if not line.strip():
            continue
        command = json.loads(line)
        if command.get("op") == "close":
            rt.close()
            out.write(json.dumps({"closed": True}) + "\n")
            out.flush()
            return
        try:
            answer = handle(rt, command)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    rt.close()


def main(argv: list[str] | None = None) -> int:
    """Start the daemon; say ``{"ready": daemon id}`` once it serves."""
    parser = argparse.ArgumentParser(prog="python -m routeledger._daemon")
    parser.add_argument("--db", required=True, help="the shared event log")
    parser.add_argument("--config", required=True, help="the configuration as a JSON object")
    args = parser.parse_args(argv)
    config = RuntimeConfig.from_dict(json.loads(args.config))
    rt = Runtime.start(config, event_log=args.db, active_health_checks=False)
    sys.stdout.write(json.dumps({"ready": rt.daemon_id}) + "\n")
    sys.stdout.flush()
    serve(rt, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
