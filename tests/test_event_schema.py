"""Tests pinning the stored event schema to tests/golden/event_schema.json: only additions pass.

Stored rows outlive the code that wrote them, so the schema may only grow: a new tag, or a new
field with a default. A removed or renamed field or tag, a changed type, a changed default, or a
new required field on an existing tag fails here (a breaking change is a new tag plus an
upcaster, see ``routeledger.events._events``).

After an intended addition, regenerate the golden file (it is rewritten only if the change is
an addition)::

    ROUTELEDGER_UPDATE_EVENT_SCHEMA=1 .venv/bin/pytest tests/test_event_schema.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from routeledger.events import EVENT_TYPES

GOLDEN = Path(__file__).parent / "golden" / "event_schema.json"
UPDATE_ENV = "ROUTELEDGER_UPDATE_EVENT_SCHEMA"

Schema = dict[str, dict[str, Any]]
"""Tag -> {"class": name, "fields": {field: {"type": text, "default": JSON value}}}; a
required field has no "default" key."""


def type_text(t: msgspec.inspect.Type) -> str:
    """Return a canonical spelling of a msgspec field type (``None`` last in a union)."""
    names: dict[type[msgspec.inspect.Type], str] = {
        msgspec.inspect.StrType: "str",
        msgspec.inspect.IntType: "int",
        msgspec.inspect.FloatType: "float",
        msgspec.inspect.BoolType: "bool",
        msgspec.inspect.NoneType: "None",
        msgspec.inspect.AnyType: "Any",
    }
    if type(t) in names:
        constraints = {k: v for k, v in msgspec.structs.asdict(t).items() if v is not None}
        suffix = f"{constraints}" if constraints else ""
        return names[type(t)] + suffix
    if isinstance(t, msgspec.inspect.ListType):
        return f"list[{type_text(t.item_type)}]"
    if isinstance(t, msgspec.inspect.DictType):
        return f"dict[{type_text(t.key_type)}, {type_text(t.value_type)}]"
    if isinstance(t, msgspec.inspect.UnionType):
        parts = sorted(type_text(x) for x in t.types)
        parts.sort(key=lambda p: p == "None")
        return " | ".join(parts)
    raise NotImplementedError(f"no canonical spelling for {t!r}: extend type_text")


def current_schema() -> Schema:
    """Return the schema of every event this version knows, from msgspec's struct info."""
    schema: Schema = {}
    for tag in sorted(EVENT_TYPES):
        cls = EVENT_TYPES[tag]
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        fields: dict[str, dict[str, Any]] = {}
        for f in info.fields:
            entry: dict[str, Any] = {"type": type_text(f.type)}
            if f.default is not msgspec.NODEFAULT:
                entry["default"] = msgspec.to_builtins(f.default)
            elif f.default_factory is not msgspec.NODEFAULT:
                entry["default"] = msgspec.to_builtins(f.default_factory())
            fields[f.encode_name] = entry
        schema[tag] = {"class": cls.__name__, "fields": fields}
    return schema


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Return every way ``new`` breaks rows written under ``old`` (empty: only additions)."""
    problems: list[str] = []
    for tag, old_event in old.items():
        if tag not in new:
            problems.append(f"{tag}: tag removed or renamed")
            continue
        new_fields = new[tag]["fields"]
        for name, old_field in old_event["fields"].items():
            if name not in new_fields:
                problems.append(f"{tag}.{name}: field removed or renamed")
                continue
            new_field = new_fields[name]
            if new_field["type"] != old_field["type"]:
                problems.append(
                    f"{tag}.{name}: type changed from {old_field['type']} to {new_field['type']}"
                )
            if ("default" in old_field) != ("default" in new_field) or (
                json.dumps(old_field.get("default")) != json.dumps(new_field.get("default"))
            ):
                problems.append(
                    f"{tag}.{name}: default changed from "
                    f"{old_field.get('default', '<required>')!r} to "
                    f"{new_field.get('default', '<required>')!r}"
                )
        for name, new_field in new_fields.items():
            if name not in old_event["fields"] and "default" not in new_field:
                problems.append(f"{tag}.{name}: new field without a default")
    return problems


def render(schema: Schema) -> str:
    """Return the golden file's text for ``schema``: one line per field, tags sorted."""
    events = []
    for tag in sorted(schema):
        fields = ",\n".join(
            f"      {json.dumps(name)}: {json.dumps(field)}"
            for name, field in schema[tag]["fields"].items()
        )
        events.append(
            f'  {json.dumps(tag)}: {{\n    "class": {json.dumps(schema[tag]["class"])},\n'
            f'    "fields": {{\n{fields}\n    }}\n  }}'
        )
    return "{\n" + ",\n".join(events) + "\n}\n"


def test_stored_event_schema_only_grows() -> None:
    """Every tag and field in the golden file still exists with the same type and default."""
    golden: Schema = json.loads(GOLDEN.read_text(encoding="utf-8"))
    current = current_schema()
    problems = breaking_changes(golden, current)
    assert not problems, "breaking change to the stored event schema:\n" + "\n".join(problems)
    if os.environ.get(UPDATE_ENV) == "1" and current != golden:
        GOLDEN.write_text(render(current), encoding="utf-8")


def test_golden_file_is_in_canonical_form() -> None:
    """The golden file is exactly what the generator writes, so diffs show only real changes."""
    text = GOLDEN.read_text(encoding="utf-8")
    assert text == render(json.loads(text))


def _schema(**fields: dict[str, Any]) -> Schema:
    return {"x.happened": {"class": "XHappened", "fields": {"ts": {"type": "float"}, **fields}}}


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        ({}, "x.happened: tag removed or renamed"),
        (_schema(), "x.happened.n: field removed or renamed"),
        (_schema(n={"type": "float", "default": 0}), "x.happened.n: type changed"),
        (_schema(n={"type": "int", "default": 1}), "x.happened.n: default changed"),
        (_schema(n={"type": "int"}), "x.happened.n: default changed"),
        (
            _schema(n={"type": "int", "default": 0}, m={"type": "str"}),
            "x.happened.m: new field without a default",
        ),
    ],
)
def test_breaking_changes_are_reported(new: Schema, problem: str) -> None:
    """A removed tag or field, a changed type or default, a new required field: each is caught."""
    old = _schema(n={"type": "int", "default": 0})
    assert any(p.startswith(problem) for p in breaking_changes(old, new))


def test_additions_are_not_breaking_changes() -> None:
    """A new tag and a new field with a default pass the check."""
    old = _schema(n={"type": "int", "default": 0})
    new = _schema(n={"type": "int", "default": 0}, m={"type": "str | None", "default": None})
    new["y.happened"] = {"class": "YHappened", "fields": {"ts": {"type": "float"}}}
    assert breaking_changes(old, new) == []
