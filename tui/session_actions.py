"""Exports, saved sessions and search: what the app does with whole chats, in files and in
the sessions store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tui.export import (
    PaneTranscript,
    branches_markdown,
    pane_markdown,
    session_markdown,
    write_export,
)
from tui.open_session import OpenSession
from tui.screens.search_screen import SearchScreen
from tui.screens.sessions_screen import SessionsScreen
from tui.session_search import SearchHit
from tui.session_store import SavedPane
from tui.widgets.chat_pane import ChatPane

if TYPE_CHECKING:
    from tui.app import PanechatApp


class SessionActions:
    """Export the panes, open a saved session, search every saved chat."""

    def __init__(self, app: PanechatApp) -> None:
        self.app = app

    async def resume(self, saved: list[SavedPane], reveal: int | None) -> ChatPane | None:
        """Open the panes of a saved session; returns the one that holds ``reveal`` (a saved
        message to scroll to: a search hit), if any."""
        revealing = None
        for pane_saved in saved:
            pane = await self.app.pane_actions.add_pane(pane_saved.config, saved=pane_saved)
            if reveal is not None and any(m.id == reveal for m in pane_saved.tree):
                revealing = pane
        restored = sum(len(pane_saved.messages) for pane_saved in saved)
        self.app.notify(f"resumed {len(saved)} panes, {restored} messages")
        return revealing

    def transcripts(self, *, reasoning: bool = False) -> list[PaneTranscript]:
        return [pane.transcript_for_export(reasoning=reasoning) for pane in self.app.panes]

    def export_pane(self) -> None:
        """The focused pane to its own Markdown file."""
        pane = self.app.focused_pane()
        if pane is None:
            return
        self._export(pane_markdown(pane.transcript_for_export()) + "\n", "panechat-pane")

    def export_branches(self) -> None:
        """The focused pane's every branch, each one whole, to its own Markdown file."""
        pane = self.app.focused_pane()
        if pane is None:
            return
        self._export(branches_markdown(pane.branch_transcripts()), "panechat-branches")

    def export_session(self, reasoning: bool = False) -> None:
        """Every pane to one Markdown file, panes as sections, in the export directory; the
        replies' reasoning only when asked (palette: "Export session with reasoning")."""
        self._export(session_markdown(self.transcripts(reasoning=reasoning)), "panechat")

    def _export(self, text: str, stem: str) -> None:
        try:
            path = write_export(text, self.app.export_dir, stem)
        except OSError as e:
            self.app.notify(
                f"could not export: {e} — check that the folder is writable", severity="error"
            )
            return
        self.app.notify(f"exported to {path}")

    def sessions(self) -> None:
        """Saved sessions: open one (this app exits and the chosen one starts), rename, delete."""
        if self.app.store is None:
            self.app.notify("sessions are not being saved in this run")
            return

        def opened(session_id: int | None) -> None:
            if session_id is not None:
                self.app.exit(OpenSession(session_id))  # cli.main reopens with that session

        self.app.push_screen(SessionsScreen(self.app.store, self.app.session_id), opened)

    def search(self) -> None:
        """Search every saved chat; a hit in a pane of this run is shown there, any other
        reopens the app on its session (as the sessions screen does), scrolled to it."""
        if self.app.store is None:
            self.app.notify("sessions are not being saved in this run")
            return
        if isinstance(self.app.screen, SearchScreen):  # Ctrl+F again, from its own input
            return

        async def chosen(hit: SearchHit | None) -> None:
            if hit is None:
                return
            here = self.app.recorder.message_at(hit.message_id)
            pane = self.app.pane_row.by_id().get(here[0]) if here is not None else None
            if pane is None or here is None:
                self.app.exit(OpenSession(hit.session_id, hit.message_id))
                return
            pane.input.focus()
            if pane.generating:  # its branch cannot move now: show where it is
                name = pane.config.name
                self.app.notify(f"found in {name}, which is answering — look again after")
                return
            self.app.pane_actions.show(pane, here[1])

        self.app.push_screen(SearchScreen(self.app.store), chosen)

    async def reveal(self, pane: ChatPane | None, message_id: int) -> None:
        """Scroll the reopened session to the search hit it was opened for."""
        if pane is None or message_id not in pane.chat_tree:
            self.app.notify("the message searched for is not in the panes that reopened")
        else:
            self.app.pane_actions.show(pane, message_id)
