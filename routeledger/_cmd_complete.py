"""``routeledger complete``: send one prompt through a runtime configured from a file."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``complete`` command."""
    p = subparsers.add_parser(
        "complete",
        help="send one prompt to real providers configured in a TOML file",
        description="Route one prompt through a runtime configured from a TOML file.",
    )
    p.add_argument("--config", required=True, help="routeledger TOML configuration")
    p.add_argument("prompt")
    p.add_argument("--model", help="model to ask for (default: the first provider's first)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--provider", help="preferred provider")
    p.add_argument("--stream", action="store_true", help="print the answer as it streams")
    p.add_argument("--db", help="event log file or postgresql:// URL (default: in memory)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Send the prompt; print the answer on stdout and what it cost on stderr."""
    from routeledger import Message, Request, Runtime, RuntimeConfig
    from routeledger.events import escape_controls as esc

    config = RuntimeConfig.from_toml(args.config)
    messages = [Message(role="system", content=args.system)] if args.system else []
    messages.append(Message(role="user", content=args.prompt))
    request = Request(
        model=args.model or config.providers[0].models[0].name,
        messages=messages,
        max_tokens=args.max_tokens,
    )
    with Runtime.start(config, event_log=args.db, active_health_checks=False) as rt:
        if args.stream:
            last = None
            for chunk in rt.stream(request, args.provider):
                # The answer is the provider's text: printed, but never obeyed by the terminal.
                sys.stdout.write(esc(chunk.delta, keep_newlines=True))
                sys.stdout.flush()
                last = chunk
            sys.stdout.write("\n")
            if last is not None:
                cost = "unknown" if last.cost is None else f"{last.cost:.6f}"
                sys.stderr.write(f"[{last.provider} {esc(last.model or '')}, cost {cost}]\n")
            return 0
        response = rt.complete(request, args.provider)
    sys.stdout.write(esc(response.content, keep_newlines=True) + "\n")
    cost = "unknown" if response.cost is None else f"{response.cost:.6f}"
    sys.stderr.write(
        f"[{response.provider} {esc(response.model)}, {response.latency_ms:.0f} ms, "
        f"{response.attempts} attempt(s), cost {cost}, request {response.request_id}]\n"
    )
    return 0
