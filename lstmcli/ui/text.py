"""User text made safe for a terminal: control characters and bidirectional overrides shown as
escapes, so that a review containing ESC[2J cannot clear the screen and one containing U+202E
cannot reverse what follows it on the line."""

from __future__ import annotations

import unicodedata

# Explicit bidirectional formatting characters (embeddings, overrides, isolates, marks).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                  "\u2066\u2067\u2068\u2069")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1), bidirectional control and lone
    surrogate (an undecodable byte of an argument) written as a visible escape; tabs stay."""
    if text.isprintable():
        return text
    return "".join(
        _escape(char)
        if (char != "\t" and unicodedata.category(char) in ("Cc", "Cs")) or char in _BIDI
        else char
        for char in text
    )
