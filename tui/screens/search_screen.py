"""A modal that searches every saved chat as the user types; Enter opens the chosen message."""

from __future__ import annotations

import sqlite3

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from core.text.printable import printable
from tui.session_search import SearchHit, fts_query
from tui.session_store import SessionStore

#: Seconds of no typing before the search runs: one query per pause, not per key.
DEBOUNCE = 0.15
#: How a matched word stands out in a snippet (a Rich style: theme variables do not apply).
MATCH_STYLE = "bold reverse"
#: Hits listed at most.
LIMIT = 50

EMPTY_HINT = "type to search every saved chat"
NO_MATCHES = "no matches"


def hit_prompt(hit: SearchHit) -> Text:
    """A hit as two lines: where it is, then its snippet. Built part by part with
    ``Text.append``, so a message's ``[b]`` or escape sequence shows as written."""
    text = Text()
    where = f"{hit.session_name} · {hit.pane_name} · {hit.role}"
    text.append(printable(where), "dim")
    text.append("\n")
    for part in hit.snippet:
        text.append(printable(part.text), MATCH_STYLE if part.matched else "")
    return text


def _count(hits: int) -> str:
    if hits == 0:
        return NO_MATCHES
    if hits >= LIMIT:
        return f"the best {LIMIT} matches"
    return "1 match" if hits == 1 else f"{hits} matches"


class SearchScreen(ModalScreen[SearchHit | None]):
    """Dismisses with the hit to open (None: nothing chosen)."""

    CSS_PATH = "search_screen.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close", id="search.close"),
        Binding("down", "to_results", "Results", id="search.results", show=False),
    ]

    def __init__(self, store: SessionStore) -> None:
        super().__init__()
        self.store = store
        self.hits: list[SearchHit] = []
        self._searched: str | None = None  # the text the listed hits are for
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="search"):
            yield Input(placeholder="search saved chats", id="search-input")
            yield OptionList(id="search-results")
            yield Static(EMPTY_HINT, id="search-status", markup=False)
            yield Static("[dim]Enter opens · ↓ picks another · Esc closes[/dim]", id="hint")

    def on_mount(self) -> None:
        self.query_one(OptionList).display = False
        self.query_one(Input).focus()

    @on(Input.Changed, "#search-input")
    def _typed(self, event: Input.Changed) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE, self._search_now)

    def _search_now(self) -> None:
        """List the hits for what the input holds now (once per text)."""
        self._timer = None
        text = self.query_one(Input).value
        if text == self._searched:
            return
        self._searched = text
        status = self.query_one("#search-status", Static)
        results = self.query_one(OptionList)
        if fts_query(text) is None:
            hits: list[SearchHit] = []
            status.update(EMPTY_HINT)
        else:
            try:
                hits = self.store.search(text, LIMIT)
            except (sqlite3.Error, OSError) as e:  # the file failed under the screen
                hits = []
                status.update(f"could not search: {printable(str(e))}")
            else:
                status.update(_count(len(hits)))
        self.hits = hits
        results.clear_options()
        results.add_options([Option(hit_prompt(hit), id=str(i)) for i, hit in enumerate(hits)])
        results.display = bool(hits)
        if hits:
            results.highlighted = 0

    @on(Input.Submitted, "#search-input")
    def _submitted(self, event: Input.Submitted) -> None:
        """Enter in the input opens the highlighted hit (the best one, unless moved)."""
        if self._timer is not None:  # typed just now: search first
            self._timer.stop()
            self._search_now()
        self._open(self.query_one(OptionList).highlighted)

    @on(OptionList.OptionSelected, "#search-results")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self._open(event.option_index)

    def _open(self, index: int | None) -> None:
        if index is not None and 0 <= index < len(self.hits):
            self.dismiss(self.hits[index])

    def action_to_results(self) -> None:
        if self.hits:
            self.query_one(OptionList).focus()

    def action_close(self) -> None:
        self.dismiss(None)
