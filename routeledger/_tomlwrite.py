"""Write plain data as TOML (the standard library reads TOML but cannot write it).

Enough for routeledger's own files (scenarios): tables, arrays of tables, inline tables and
arrays, strings, numbers and booleans; ``None`` values are left out (TOML has no null).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["dumps"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dumps(data: Mapping[str, Any], *, inline: Iterable[str] = (), header: str = "") -> str:
    """Return ``data`` as a TOML document.

    Args:
        data: the document; nested mappings become tables, lists of mappings arrays of tables.
        inline: keys whose lists of mappings are written as inline arrays, one per line.
        header: comment lines put first.
    """
    out: list[str] = [f"# {line}".rstrip() for line in header.splitlines()]
    if out:
        out.append("")
    _table(out, (), data, frozenset(inline))
    return "\n".join(out).rstrip() + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _is_tables(key: str, value: Any, inline: frozenset[str]) -> bool:
    return (
        key not in inline
        and isinstance(value, list)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def _table(
    out: list[str], path: tuple[str, ...], data: Mapping[str, Any], inline: frozenset[str]
) -> None:
    subtables = []
    for key, value in data.items():
        if value is None:
            continue
        if (isinstance(value, Mapping) and value) or _is_tables(key, value, inline):
            subtables.append((key, value))
        else:
            out.append(f"{_key(key)} = {_value(value, key in inline)}")
    for key, value in subtables:
        sub = (*path, key)
        name = ".".join(_key(k) for k in sub)
        if isinstance(value, Mapping):
            out.extend(["", f"[{name}]"])
            _table(out, sub, value, inline)
        else:
            for item in value:
                out.extend(["", f"[[{name}]]"])
                _table(out, sub, item, inline)


def _value(value: Any, multiline: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        items = [f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [
            _value(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value)
        ]
        if multiline and items:
            return "[\n" + "".join(f"  {item},\n" for item in items) + "]"
        return "[" + ", ".join(items) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
