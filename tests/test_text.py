"""escape_controls and escape_json_controls: outside text made safe to store and print."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.events import escape_controls, escape_json_controls

UNSAFE = [
    *map(chr, range(0x20)),
    *map(chr, range(0x7F, 0xA0)),
    "\u061c",
    *map(chr, range(0x200B, 0x2010)),
    "\u2028",
    "\u2029",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2060, 0x2065)),
    *map(chr, range(0x2066, 0x206A)),
    "\ufeff",
]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31m", "\\x1b[31m"),
        ("\x07", "\\x07"),
        ("\x00", "\\x00"),
        ("\x08", "\\x08"),
        ("a\nb\tc", "a\\x0ab\\x09c"),
        ("\x9b", "\\x9b"),
        ("abc\u202edef", "abc\\u202edef"),
        ("\u2066x\u2069", "\\u2066x\\u2069"),
    ],
)
def test_each_control_character_becomes_a_visible_escape(raw: str, shown: str) -> None:
    """ESC, BEL, NUL, BS, newlines, C1 and bidi controls are shown as escapes."""
    assert escape_controls(raw) == shown


def test_ordinary_text_is_returned_unchanged() -> None:
    """Printable text, non-ASCII letters and backslashes are left alone."""
    for text in ["gpt-4o-mini", "stop", "café ✓ 中文 \\x1b", ""]:
        assert escape_controls(text) is text


def test_multi_line_text_keeps_its_newlines_and_tabs() -> None:
    """keep_newlines leaves \\n and \\t but still escapes CR and ESC."""
    assert escape_controls("a\n\tb\r\x1b", keep_newlines=True) == "a\n\tb\\x0d\\x1b"


@given(st.text())
def test_escaped_text_holds_no_unsafe_character_and_escaping_is_idempotent(text: str) -> None:
    """Nothing unsafe survives, and escaping twice equals escaping once."""
    once = escape_controls(text)
    assert not any(c in once for c in UNSAFE)
    assert escape_controls(once) == once
    multi = escape_controls(text, keep_newlines=True)
    assert not any(c in multi for c in UNSAFE if c not in "\n\t")


@given(st.text())
def test_json_escaping_decodes_to_the_same_value(text: str) -> None:
    """A JSON document escaped for the terminal still decodes to the original value."""
    document = escape_json_controls(msgspec.json.encode({"t": text}).decode())
    assert not any(c in document for c in UNSAFE)
    assert msgspec.json.decode(document) == {"t": text}
