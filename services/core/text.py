r"""What a PostgreSQL text column can hold, and how device text is made safe to keep or show.

PostgreSQL text cannot hold U+0000, and a UTF-8 database cannot hold a lone surrogate
(U+D800..U+DFFF without its pair; psycopg cannot even encode one). JSON can carry both
(``"\u0000"``, ``"\ud800"``), so every string that comes from a device is checked with
``storable`` before it goes anywhere near a text column, and anything echoed back into a
dead letter (a topic, a detail) goes through ``sanitised`` and ``bounded`` first.
"""

from __future__ import annotations

import reprlib

# Longest quoted value in a refusal's detail: enough to recognise it, and a 60 KB value
# echoed in every detail would undo the bound on dead-letter storage.
_SHOWN_CHARS = 60
_SHOWN_ITEMS = 4
_SHOWN_DEPTH = 2

_repr = reprlib.Repr()
_repr.maxstring = _SHOWN_CHARS
_repr.maxother = _SHOWN_CHARS
_repr.maxlong = _SHOWN_CHARS
_repr.maxlist = _SHOWN_ITEMS
_repr.maxdict = _SHOWN_ITEMS
_repr.maxtuple = _SHOWN_ITEMS
_repr.maxlevel = _SHOWN_DEPTH

_NUL = "\x00"


def storable(text: str) -> bool:
    """Whether PostgreSQL text can hold ``text``: no U+0000 and no lone surrogate."""
    if text.isascii():
        return _NUL not in text
    if _NUL in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sanitised(text: str) -> str:
    """Return ``text`` with U+0000 and lone surrogates written as backslash escapes."""
    if storable(text):
        return text
    return text.replace(_NUL, "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def bounded(text: str, max_chars: int) -> str:
    """Return ``text`` cut to at most ``max_chars`` characters, marked with ``…`` when cut."""
    if len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)] + "…"


def shown(value: object) -> str:
    """A short, storable ``repr`` of a device's value for a refusal's detail.

    ``reprlib`` bounds strings, numbers and nesting as it goes, so even a 64 KiB value costs
    little to show; ``repr`` already escapes U+0000 and lone surrogates.
    """
    return sanitised(_repr.repr(value))
