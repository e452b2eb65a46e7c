"""What the app saves as chats happen, written from what the engine's frames say (a finished
reply's text comes in its frame, never from a widget). :class:`NullRecorder` stands in when
nothing is saved, so the app never asks whether a store exists."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core import PanechatError
from core.chat import ChatConfig, ChatDelta, ChatSnapshot
from core.reasoning import ReasoningMarkers
from tui.session_store import SessionStore

#: Saves a pane's KV cells to a path and returns its decode state (``ChatEngine.snapshot``).
Snapshot = Callable[[str, Path | None], ChatSnapshot]


class Recorder(Protocol):
    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None: ...
    def pane_restored(self, pane_id: str, row: int) -> None: ...
    def pane_changed(self, pane_id: str, config: ChatConfig) -> None: ...
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

    def pane_changed(self, pane_id: str, config: ChatConfig) -> None:
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


#: How often a streaming reply is written: a crash (``kill -9``, power loss) loses at most
#: this much of it.
CHECKPOINT_INTERVAL = 1.0


@dataclass(slots=True)
class StreamingReply:
    """A reply being written as it streams: its text so far, its row once written."""

    replaces_last: bool  # a regeneration: it overwrites the last reply's row
    text: str = ""
    reasoning: str = ""  # a reasoning model's thoughts so far
    message_id: int | None = None
    written_at: float = 0.0


class SessionRecorder:
    """Writes one session: each pane's row, its messages as they happen, and on quit its
    decode state. User turns are written when sent (before the model sees them); a reply is
    written as it streams, at most every :data:`CHECKPOINT_INTERVAL`, and whole when it ends.

    A write that fails (a full disk, a folder that cannot be written, a damaged database)
    never stops the chat: the text stays on screen, ``on_error`` is told once, and later
    writes are tried again (the first that succeeds ends the outage)."""

    def __init__(
        self,
        store: SessionStore,
        session_id: int,
        on_error: Callable[[str], None] = lambda message: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.on_error = on_error
        self.clock = clock
        self._streaming: dict[str, StreamingReply] = {}  # pane id -> its reply in flight
        self.failing = False  # the last write failed (and the user was told)
        self._rows: dict[str, int] = {}  # pane id -> its row in the store
        self._unwritten: dict[str, tuple[ChatConfig, str]] = {}  # panes whose row failed
        self._lost: set[str] = set()  # panes that missed a write: their KV is not saved

    @contextmanager
    def _writing(self, pane_id: str | None = None) -> Iterator[None]:
        """Guard one write; a failure marks the pane as having lost it."""
        try:
            yield
        except (sqlite3.Error, OSError) as e:
            if pane_id is not None:
                self._lost.add(pane_id)
            if not self.failing:
                self.failing = True
                self.on_error(
                    f"could not save to {self.store.path} ({e}); the chat goes on unsaved "
                    "— export it to keep it"
                )
        else:
            self.failing = False

    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None:
        self._unwritten[pane_id] = (config, branched_from)
        self._row(pane_id)

    def _row(self, pane_id: str) -> int | None:
        """The pane's row, written now if an earlier try failed (None: still failing, or a
        pane this session does not record)."""
        if pane_id in self._unwritten:
            config, branched_from = self._unwritten[pane_id]
            with self._writing():
                self._rows[pane_id] = self.store.add_pane(self.session_id, config, branched_from)
                del self._unwritten[pane_id]
        return self._rows.get(pane_id)

    def pane_restored(self, pane_id: str, row: int) -> None:
        self._rows[pane_id] = row

    def pane_changed(self, pane_id: str, config: ChatConfig) -> None:
        """The pane's settings changed (it answers with another model): resume uses these."""
        row = self._row(pane_id)
        if row is not None:
            with self._writing(pane_id):
                self.store.update_pane_config(row, config)

    def message(self, pane_id: str, role: str, text: str) -> None:
        row = self._row(pane_id)
        if row is None:
            self._lost.add(pane_id)
            return
        with self._writing(pane_id):
            self.store.add_message(row, role, text)

    def frame(self, pane_id: str, delta: ChatDelta) -> None:
        """What a frame says: a taken-back turn, a reply that streams (checkpointed), one that
        finished (or replaced the last one, after a regenerate)."""
        row = self._row(pane_id)
        if row is None:
            self._lost.add(pane_id)
            return
        if delta.taken_back is not None:
            with self._writing(pane_id):
                self.store.drop_last_turn(row)
        if delta.started:
            self._streaming[pane_id] = StreamingReply(delta.replaces_last, written_at=self.clock())
        reply = self._streaming.get(pane_id)
        if reply is not None and delta.finished is None:
            reply.text += delta.text
            reply.reasoning += delta.reasoning
            so_far = ReasoningMarkers().join(reply.reasoning, reply.text)
            if self.clock() - reply.written_at >= CHECKPOINT_INTERVAL and so_far:
                self._write_reply(row, reply, so_far)
        if delta.finished is not None:
            self._reply_ended(pane_id, row, delta.reply_text)

    def _write_reply(
        self, row: int, reply: StreamingReply, text: str, final_of: str | None = None
    ) -> None:
        """A checkpoint, or with ``final_of`` (the pane) the whole reply: only a final write
        that fails loses anything (a failed checkpoint is covered by the final one)."""
        reply.written_at = self.clock()
        with self._writing(final_of):
            if reply.message_id is not None:
                self.store.update_message(reply.message_id, text)
            elif reply.replaces_last:
                self.store.replace_last_reply(row, text)
            else:
                reply.message_id = self.store.add_message(row, "assistant", text)

    def _reply_ended(self, pane_id: str, row: int, text: str | None) -> None:
        """Save a finished reply whole (None: cancelled by a clear, nothing to keep)."""
        reply = self._streaming.pop(pane_id, None) or StreamingReply(replaces_last=False)
        if text is not None:
            self._write_reply(row, reply, text, pane_id)

    def pane_cleared(self, pane_id: str) -> None:
        self._streaming.pop(pane_id, None)  # its late frames write nothing
        row = self._row(pane_id)
        if row is not None:
            with self._writing(pane_id):
                self.store.clear_pane(row)
                self._lost.discard(pane_id)  # nothing left to be missing

    def pane_closed(self, pane_id: str) -> None:
        self._streaming.pop(pane_id, None)
        self._unwritten.pop(pane_id, None)
        row = self._rows.pop(pane_id, None)
        if row is not None:
            with self._writing():
                self.store.close_pane(row)

    def save_states(self, snapshot: Snapshot) -> None:
        """On quit: every open pane's KV cells and decode state, to resume without decoding,
        and the text of a reply that quitting cut short (the KV cells hold it). A pane whose
        state cannot be written keeps its transcript: it is read again on resume."""
        for pane_id, row in self._rows.items():
            try:
                path: Path | None = self.store.kv_path(self.session_id, row)
            except OSError as e:  # the kv folder cannot be made: save the transcript only
                self.on_error(f"could not save the decode state of a pane ({e})")
                path = None
            try:
                saved = snapshot(pane_id, path)
            except PanechatError:  # the engine did not stop: keep the transcript only
                saved = ChatSnapshot(None)
            if saved.cut_reply is not None:
                self._reply_ended(pane_id, row, saved.cut_reply)
            # A transcript that missed a write would not match the cells: read it again.
            state = None if pane_id in self._lost else saved.state
            with self._writing():
                self.store.save_state(row, state)
