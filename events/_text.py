"""Text from outside made safe to store and print: control and bidi characters escaped.

A provider writes error messages, model names and finish reasons; a terminal that prints them
raw obeys whatever ESC sequences they hold, and a right-to-left override (U+202E) makes a
line read differently from what it says. :func:`escape_controls` replaces each such character
with a visible escape (``\\x1b``, ``\\u202e``), so the text stays readable and nothing acts on
the reader. It escapes nothing else (a backslash stays a backslash), so escaping twice is the
same as escaping once, and the wire (which stores) and the command line (which prints) can
both apply it. :func:`escape_json_controls` does the same inside an encoded JSON document
with JSON's own ``\\uXXXX`` escapes, so the document still decodes to the same values.
"""

from __future__ import annotations

import re

__all__ = ["escape_controls", "escape_json_controls"]

_INVISIBLE = (
    "\x7f-\x9f"  # DEL and the C1 controls (0x9b is a one-byte CSI)
    "\u061c"  # Arabic letter mark
    "\u200b-\u200f"  # zero-width spaces and joiners, LRM, RLM
    "\u2028\u2029"  # line and paragraph separators
    "\u202a-\u202e"  # bidi embeddings and overrides
    "\u2060-\u2064"  # word joiner, invisible operators
    "\u2066-\u2069"  # bidi isolates
    "\ufeff"  # zero-width no-break space
    "\ufff9-\ufffb"  # interlinear annotation controls
)
_ONE_LINE = re.compile(f"[\x00-\x1f{_INVISIBLE}]")
_MULTI_LINE = re.compile(f"[\x00-\x08\x0b-\x1f{_INVISIBLE}]")
_JSON = re.compile(f"[{_INVISIBLE}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """Return ``text`` with control, bidi and invisible format characters escaped.

    Args:
        text: Any text that came from outside (a provider, a log written by anyone).
        keep_newlines: Keep ``\\n`` and ``\\t`` as they are (for multi-line text such as an
            answer); otherwise they are escaped too, so the text stays on one line.
    """
    if text.isprintable():
        return text  # the common case: every character escaped here is unprintable
    pattern = _MULTI_LINE if keep_newlines else _ONE_LINE
    return pattern.sub(_visible, text)


def escape_json_controls(document: str) -> str:
    """Return an encoded JSON ``document`` with the characters above as ``\\uXXXX`` escapes.

    JSON encoders escape C0 controls already; DEL, C1 and the bidi and invisible characters
    they leave raw. The result decodes to exactly the same values.
    """
    return _JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", document)
