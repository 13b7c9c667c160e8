"""Incident replay: a recorded window of a log turned into a simulation scenario file.

The scenario holds the configuration the log recorded (or a given one), each traced
provider's behaviour over the window as ``[providers.sim] phases`` and the recorded requests
as ``[simulation] arrivals`` (see :mod:`routeledger.sim`). ``routeledger simulate`` runs it;
``routeledger whatif --scenario`` compares it with other settings.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import msgspec

from routeledger._tomlwrite import dumps
from routeledger._trace import DEFAULT_BUCKET_S, Window, read_arrivals, read_trace
from routeledger._whatif import SECRET_FIELDS, config_data, scenario_config

__all__ = ["extract_scenario", "scenario_toml"]

INLINE_KEYS = ("arrivals", "phases", "errors", "outages", "capabilities")


def extract_scenario(
    db: str | os.PathLike[str],
    *,
    window: Window | None = None,
    bucket_s: float = DEFAULT_BUCKET_S,
    config: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Return the scenario of a window of the log at ``db`` as plain data (TOML-ready).

    Raises:
        ConfigError: the log recorded no configuration and none is given, or it is invalid.
        StoreError: ``db`` is not a readable event log.
    """
    from routeledger._replay import open_readonly

    store = open_readonly(db)
    try:
        trace = read_trace(store, window=window, bucket_s=bucket_s)
        data, _ = config_data(trace, config)
        scenario_config(data)  # refuse an invalid configuration before writing anything
        origin = trace.origin or 0.0
        arrivals = [
            msgspec.to_builtins(a) for a in read_arrivals(store, origin=origin, window=window)
        ]
    finally:
        store.close()
    behaviours = trace.behaviours()
    providers = []
    for raw in data.get("providers", []):
        # Never a secret in a file meant to be shared, nor a variable a simulation cannot use.
        raw = {k: v for k, v in raw.items() if k not in (*SECRET_FIELDS, "sim")}
        name = raw.get("name")
        if name in behaviours:
            raw["sim"] = msgspec.to_builtins(behaviours[name])
        providers.append(raw)
    data = {k: v for k, v in data.items() if k not in ("providers", "simulation")}
    data.pop("log", None)
    models = [a["model"] for a in arrivals]
    data["simulation"] = {
        "requests": len(arrivals),
        "model": max(set(models), key=models.count) if models else None,
        "arrivals": arrivals,
    }
    data["providers"] = providers
    data["_origin"] = origin
    data["_duration_s"] = trace.duration_s
    return data


def scenario_toml(data: dict[str, Any], *, db: str, bucket_s: float) -> str:
    """Return the scenario as a TOML document with a header that says where it came from."""
    data = dict(data)
    origin = data.pop("_origin", 0.0)
    duration = data.pop("_duration_s", 0.0)
    start = dt.datetime.fromtimestamp(origin, dt.UTC).isoformat(timespec="seconds")
    traced = [p["name"] for p in data.get("providers", []) if "sim" in p]
    untraced = [p["name"] for p in data.get("providers", []) if "sim" not in p]
    header = (
        f"A scenario extracted from {os.path.basename(db)} by `routeledger scenario`:\n"
        f"{len(data['simulation']['arrivals'])} recorded request(s) from {start} "
        f"({duration:.1f} s); simulated second 0 is {start}.\n"
        f"Providers' recorded behaviour in {bucket_s:g} s phases: {', '.join(traced) or 'none'}."
    )
    if untraced:
        header += (
            f"\nNever tried in the window (no trace, default behaviour): {', '.join(untraced)}."
        )
    header += (
        "\nRun it: `routeledger simulate --scenario FILE`, `routeledger whatif --scenario FILE`."
    )
    return dumps(data, inline=INLINE_KEYS, header=header)
