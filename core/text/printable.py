"""Untrusted text made safe to show in a terminal.

Model output, typed or pasted input, saved sessions and GGUF metadata can all hold control
characters; written raw, an ``ESC [2J`` clears the user's screen, an OSC 52 sequence sets their
clipboard, an OSC 0 sequence retitles the terminal. :func:`printable` shows each control
character as its Unicode picture (``ESC`` becomes ``␛``), so the text stays readable and the
terminal interprets nothing. Tabs and newlines stay; carriage returns are dropped (a ``\\r\\n``
reads as ``\\n``, and a lone one would move the cursor).
"""

from __future__ import annotations

#: C0 controls as their pictures (U+2400 + code), DEL as ␡, C1 controls (which some terminals
#: take as 8-bit escapes, e.g. U+009B as CSI) as the replacement character.
_SAFE = str.maketrans(
    {
        **{code: 0x2400 + code for code in range(0x20) if code not in (0x09, 0x0A, 0x0D)},
        0x0D: None,
        0x7F: 0x2421,
        **dict.fromkeys(range(0x80, 0xA0), 0xFFFD),
    }
)


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline made visible and inert."""
    if text.isascii() and text.isprintable():
        return text  # the common case, without building a new string
    return text.translate(_SAFE)
