"""What the app saves as chats happen, written from what the engine's frames say (a finished
reply's text comes in its frame, never from a widget). :class:`NullRecorder` stands in when
nothing is saved, so the app never asks whether a store exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from core import PanechatError
from core.chat import ChatConfig, ChatDelta, ChatSnapshot
from tui.session_store import SessionStore

#: Saves a pane's KV cells to a path and returns its decode state (``ChatEngine.snapshot``).
Snapshot = Callable[[str, Path], ChatSnapshot]


class Recorder(Protocol):
    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None: ...
    def pane_restored(self, pane_id: str, row: int) -> None: ...
    def message(self, pane_id: str, role: str, text: str) -> None: ...
    def frame(self, pane_id: str, delta: ChatDelta) -> None: ...
    def pane_cleared(self, pane_id: str) -> None: ...
    def pane_closed(self, pane_id: str) -> None: ...
    def save_states(self, snapshot: Snapshot) -> None: ...


class NullRecorder:
    """Saves nothing (a run without a sessions store)."""

    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None:
        pass

    def pane_restored(self, pane_id: str, row: int) -> None:
        pass

    def message(self, pane_id: str, role: str, text: str) -> None:
        pass

    def frame(self, pane_id: str, delta: ChatDelta) -> None:
        pass

    def pane_cleared(self, pane_id: str) -> None:
        pass

    def pane_closed(self, pane_id: str) -> None:
        pass

    def save_states(self, snapshot: Snapshot) -> None:
        pass


class SessionRecorder:
    """Writes one session: each pane's row, its messages as they happen, and on quit its
    decode state. User turns are written when sent, replies when they finish."""

    def __init__(self, store: SessionStore, session_id: int) -> None:
        self.store = store
        self.session_id = session_id
        self._rows: dict[str, int] = {}  # pane id -> its row in the store
        self._regenerating: set[str] = set()  # panes whose next reply replaces the last

    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None:
        self._rows[pane_id] = self.store.add_pane(self.session_id, config, branched_from)

    def pane_restored(self, pane_id: str, row: int) -> None:
        self._rows[pane_id] = row

    def message(self, pane_id: str, role: str, text: str) -> None:
        row = self._rows.get(pane_id)
        if row is not None:
            self.store.add_message(row, role, text)

    def frame(self, pane_id: str, delta: ChatDelta) -> None:
        """What a frame completed: a taken-back turn, a reply that finished (or replaced the
        last one, after a regenerate)."""
        row = self._rows.get(pane_id)
        if row is None:
            return
        if delta.replaces_last:
            self._regenerating.add(pane_id)
        if delta.taken_back is not None:
            self.store.drop_last_turn(row)
        if delta.finished is not None:
            self._reply_ended(pane_id, row, delta.reply_text)

    def _reply_ended(self, pane_id: str, row: int, text: str | None) -> None:
        """Save a finished reply (None: cancelled by a clear, nothing to keep)."""
        replaces = pane_id in self._regenerating
        self._regenerating.discard(pane_id)
        if text is None:
            return
        if replaces:
            self.store.replace_last_reply(row, text)
        else:
            self.store.add_message(row, "assistant", text)

    def pane_cleared(self, pane_id: str) -> None:
        row = self._rows.get(pane_id)
        if row is not None:
            self.store.clear_pane(row)

    def pane_closed(self, pane_id: str) -> None:
        row = self._rows.pop(pane_id, None)
        if row is not None:
            self.store.close_pane(row)

    def save_states(self, snapshot: Snapshot) -> None:
        """On quit: every open pane's KV cells and decode state, to resume without decoding,
        and the text of a reply that quitting cut short (the KV cells hold it)."""
        for pane_id, row in self._rows.items():
            try:
                saved = snapshot(pane_id, self.store.kv_path(self.session_id, row))
            except PanechatError:  # the engine did not stop: keep the transcript only
                saved = ChatSnapshot(None)
            if saved.cut_reply is not None:
                self._reply_ended(pane_id, row, saved.cut_reply)
            self.store.save_state(row, saved.state)
