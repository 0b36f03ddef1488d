"""bounded(): a client's string made fit for a log line or an error message. Pure.

A client chooses the model name, the path, a role, up to `max_body_mb` of
each: logged whole, four 9 MB names rotated a usage log's every earlier line
away, and a newline or an ANSI escape could forge a line in a terminal or a
log file. So what is shown of such a string is its first NAME_CHARS
characters, with every control, format and line-separator character written
as an escape (`\\n`, `\\x1b`, `\\u2028`), and, when cut, its length.
"""

from __future__ import annotations

import unicodedata

NAME_CHARS = 128
ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Cc: C0/C1 controls (ANSI escapes, bells); Cf: format (bidi overrides, zero-width);
# Zl, Zp: the Unicode line and paragraph separators, newlines to some viewers.
# Cs: lone surrogates, which no UTF-8 log line can hold.
HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def bounded(text: str, limit: int = NAME_CHARS) -> str:
    """`text` as shown: at most `limit` characters, then `… (N characters)` if it was cut."""
    shown = "".join(_visible(c) for c in text[:limit])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[:limit]}… ({len(text)} characters)"


def _visible(c: str) -> str:
    if c in ESCAPES:
        return ESCAPES[c]
    if unicodedata.category(c) not in HIDDEN:
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
