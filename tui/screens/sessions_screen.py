"""A modal listing saved sessions: open one, rename it, delete it."""

from __future__ import annotations

import sqlite3
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from core.text.printable import printable
from tui.session_store import SessionStore


class SessionsScreen(ModalScreen[int | None]):
    """Dismisses with the id of the session to open (None: stay in this one)."""

    CSS_PATH = "sessions_screen.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close", id="sessions.close"),
        Binding("enter", "open", "Open", id="sessions.open", priority=True),
        Binding("r", "rename", "Rename", id="sessions.rename"),
        Binding("d", "delete", "Delete (press twice)", id="sessions.delete"),
    ]

    def __init__(self, store: SessionStore, current: int | None) -> None:
        super().__init__()
        self.store = store
        self.current = current
        self._armed_delete: int | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="sessions"):
            yield Static("[b]Saved sessions[/b]")
            table: DataTable[str | Text] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("", "name", "panes", "messages", "last used")
            yield table
            yield Input(placeholder="new name, then Enter", id="rename")
            yield Static(
                "[dim]Enter opens · r renames · d twice deletes · Esc closes[/dim]", id="hint"
            )

    def on_mount(self) -> None:
        self.query_one("#rename", Input).display = False
        self._fill()
        self.query_one(DataTable).focus()

    def _fill(self) -> None:
        """(Re)list the sessions, keeping the cursor on the same session when it is still there."""
        table = self.query_one(DataTable)
        keep = self._selected()
        table.clear()
        row = 0
        try:
            sessions = self.store.sessions()
        except (sqlite3.Error, OSError) as e:
            self._failed("list the sessions", e)
            sessions = []
        for i, s in enumerate(sessions):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
            mark = "●" if s.id == self.current else ""
            name = Text(printable(s.name))  # a name shown as typed, never as markup
            table.add_row(mark, name, str(s.panes), str(s.messages), when, key=str(s.id))
            if s.id == keep:
                row = i
        table.move_cursor(row=row)

    def _selected(self) -> int | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return int(key) if key is not None else None

    def action_close(self) -> None:
        rename = self.query_one("#rename", Input)
        if rename.display:
            rename.display = False
            self.query_one(DataTable).focus()
            return
        self.dismiss(None)

    def action_open(self) -> None:
        rename = self.query_one("#rename", Input)
        if rename.display:
            self._finish_rename(rename)
            return
        chosen = self._selected()
        self.dismiss(None if chosen == self.current else chosen)

    def action_rename(self) -> None:
        if self._selected() is None:
            return
        rename = self.query_one("#rename", Input)
        rename.value = ""
        rename.display = True
        rename.focus()

    def _finish_rename(self, rename: Input) -> None:
        chosen, name = self._selected(), rename.value.strip()
        rename.display = False
        if chosen is not None and name:
            try:
                self.store.rename(chosen, name)
            except (sqlite3.Error, OSError) as e:
                self._failed("rename it", e)
            else:
                self.notify(f"renamed to {printable(name)!r}", markup=False)
        self._fill()
        self.query_one(DataTable).focus()

    def action_delete(self) -> None:
        chosen = self._selected()
        if chosen is None:
            return
        if chosen == self.current:
            self.notify("this is the session you are in — open another one to delete it")
            return
        if self._armed_delete != chosen:
            self._armed_delete = chosen
            self.notify("press d again to delete this session and its saved state")
            return
        self._armed_delete = None
        try:
            self.store.delete(chosen)
        except (sqlite3.Error, OSError) as e:
            self._failed("delete it", e)
        else:
            self.notify("session deleted")
        self._fill()

    def _failed(self, doing: str, error: Exception) -> None:
        """A sessions file that fails under the screen: say so, and keep the app running."""
        message = f"could not {doing}: {printable(str(error))}"
        self.notify(message, severity="error", markup=False)
