"""Searching every saved message: what the user types, made a safe FTS5 query, and the hits.

The index is the sessions file's ``messages_fts`` (see :mod:`tui.session_store`). A hit's
snippet comes back from SQLite as plain text parts, each one matched or not, so a screen can
highlight the matched words without ever reading the message's text as markup.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

#: Where ``snippet()`` starts and ends a matched word: private-use characters, which no
#: keyboard types and no model is trained to write. A message that holds one anyway (found
#: with ``instr`` below) has its snippet shown without highlights rather than misread.
MATCH_START = "\ue000"
MATCH_END = "\ue001"
#: Marks the places a snippet cuts its message.
ELLIPSIS = "…"
#: Words a snippet shows around the matches (FTS5 allows at most 64).
SNIPPET_WORDS = 16


class SnippetPart(NamedTuple):
    """A run of a snippet's text; ``matched``: it is a word the query found."""

    text: str
    matched: bool


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One saved message that matches, with where it is: enough to reopen its session and
    scroll to it."""

    session_id: int
    session_name: str
    pane_id: int
    pane_name: str
    message_id: int
    role: str
    snippet: tuple[SnippetPart, ...]

    def marked(self, before: str = "«", after: str = "»") -> str:
        """The snippet as one plain string, each matched word between ``before`` and
        ``after`` (for a terminal line; a screen highlights the parts instead)."""
        return "".join(
            f"{before}{part.text}{after}" if part.matched else part.text for part in self.snippet
        )


def _has_word(text: str) -> bool:
    """Whether ``text`` holds a letter or digit: FTS5's tokenizer (unicode61) takes the rest
    for separators, so a word without one finds nothing and is dropped."""
    return any(ch.isalnum() for ch in text)


def fts_query(text: str) -> str | None:
    """What the user typed as an FTS5 MATCH expression: every word a quoted phrase (its
    ``"`` doubled), so FTS5 syntax (AND, OR, NOT, NEAR, ``-``, ``:``, ``*``, ``^``,
    parentheses) is searched for as text, never obeyed; all of them must occur. While the
    user is still typing the last word (no space after it) it is a prefix: ``"wor"*``.
    None: nothing in it to look for (empty, blank, punctuation only). A NUL separates words:
    FTS5 reads the expression as a C string, and would end it there."""
    words = [word for word in text.replace("\0", " ").split() if _has_word(word)]
    if not words:
        return None
    phrases = ['"' + word.replace('"', '""') + '"' for word in words]
    if not text[-1].isspace():
        phrases[-1] += "*"
    return " ".join(phrases)


_WHITESPACE = re.compile(r"\s+")


def snippet_parts(snippet: str, plain: bool = False) -> tuple[SnippetPart, ...]:
    """Split the text ``snippet()`` returned at its markers, on one line (whitespace runs
    become one space). ``plain``: the message itself held a marker character, so nothing is
    marked as matched and the markers are dropped."""
    if plain:
        text = snippet.replace(MATCH_START, "").replace(MATCH_END, "")
        return (SnippetPart(_WHITESPACE.sub(" ", text), False),) if text else ()
    parts: list[SnippetPart] = []
    for i, chunk in enumerate(re.split(f"[{MATCH_START}{MATCH_END}]", snippet)):
        if chunk:
            parts.append(SnippetPart(_WHITESPACE.sub(" ", chunk), i % 2 == 1))
    return tuple(parts)


def _pane_name(config: str) -> str:
    """The pane's name from its saved config (a damaged one: no name, rather than no hit)."""
    try:
        name = json.loads(config).get("name", "")
    except (ValueError, AttributeError):
        return ""
    return name if isinstance(name, str) else ""


_SEARCH = """
SELECT s.id, s.name, p.id, p.config, m.id, m.role,
       snippet(messages_fts, 0, ?, ?, ?, ?),
       instr(m.text, ?) > 0 OR instr(m.text, ?) > 0
FROM messages_fts
JOIN messages m ON m.id = messages_fts.rowid
JOIN panes p ON p.id = m.pane_id
JOIN sessions s ON s.id = p.session_id
WHERE messages_fts MATCH ? AND NOT p.closed
ORDER BY messages_fts.rank, m.id DESC
LIMIT ?
"""


def search_messages(db: sqlite3.Connection, text: str, limit: int = 50) -> list[SearchHit]:
    """The saved messages that match what the user typed, best first (FTS5's bm25 rank; on
    a tie, the newer first). Messages of closed panes are left out: a reopened session does
    not show those panes, so such a hit could not be scrolled to."""
    query = fts_query(text)
    if query is None or limit <= 0:
        return []
    rows = db.execute(
        _SEARCH,
        (MATCH_START, MATCH_END, ELLIPSIS, SNIPPET_WORDS, MATCH_START, MATCH_END, query, limit),
    ).fetchall()
    return [
        SearchHit(
            session_id=int(session_id),
            session_name=str(session_name),
            pane_id=int(pane_id),
            pane_name=_pane_name(str(config)),
            message_id=int(message_id),
            role=str(role),
            snippet=snippet_parts(str(snippet), plain=bool(has_marker)),
        )
        for session_id, session_name, pane_id, config, message_id, role, snippet, has_marker in rows
    ]
