"""What a user name, a token name and a journaled comment may contain.

A name is journaled and shown to other people, so it must read as what it is: 1 to 64
characters, no control or format characters (newline, ESC, BEL, NUL, zero-width joiners,
bidirectional overrides), no surrounding blanks, already in NFKC form (so a full-width
"ｓｙｓｔｅｍ" is not a second "system"), and never "system", the engine's own name in the journal.
"""

from __future__ import annotations

import unicodedata

SYSTEM = "system"  # the journal's user for what the engine does by itself
MAX_NAME = 64
# Cc control, Cf format (zero-width, bidi overrides), Cs surrogates, Co private use,
# Cn unassigned, Zl/Zp line and paragraph separators
_REFUSED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def hidden_characters(text: str) -> list[str]:
    """The control and format characters in text, as U+XXXX (empty when there are none)."""
    return [f"U+{ord(c):04X}" for c in text if unicodedata.category(c) in _REFUSED]


def name_problem(name: object, what: str = "a user name") -> str | None:
    """Why name cannot be a user's (or a token's) name, or None when it can."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        return f"{what} must be 1 to {MAX_NAME} characters"
    hidden = hidden_characters(name)
    if hidden:
        return f"{what} may not contain control or invisible characters ({', '.join(hidden[:3])})"
    if name != name.strip():
        return f"{what} may not begin or end with blanks"
    if unicodedata.normalize("NFKC", name) != name:
        return f"{what} must be in Unicode NFKC form (no full-width or compatibility letters)"
    if name.casefold() == SYSTEM:
        return f"{name!r} is the alarm engine's own name in the journal"
    return None


def text_problem(text: object, field: str, max_chars: int) -> str | None:
    """Why a free-text field (a comment, a reason) is refused, or None."""
    if not isinstance(text, str) or len(text) > max_chars:
        return f"{field} must be a string of at most {max_chars} characters"
    hidden = hidden_characters(text)
    if hidden:
        return (f"{field} may not contain control or invisible characters "
                f"({', '.join(hidden[:3])}): one line of visible text")
    return None
