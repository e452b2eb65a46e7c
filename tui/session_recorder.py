"""What the app saves as chats happen, written from the engine's frames: each frame's tree
changes (a message added, a reply's checkpoint or its end, the branch shown), never from a
widget. :class:`NullRecorder` stands in when nothing is saved, so the app never asks whether a
store exists."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from core import PanechatError, StopReason
from core.chat import (
    ChatConfig,
    ChatDelta,
    ChatSnapshot,
    EngineEvent,
    Frame,
    Role,
    TreeChange,
    TreeMessage,
)
from core.chat.token_stats import ReplyOdds
from tui.session_store import SavedPane, SessionStore

#: How often a streaming reply's text is written: a crash (``kill -9``, power loss) loses at
#: most this much of it.
CHECKPOINT_INTERVAL = 1.0

#: Saves a pane's KV cells to a path and returns its decode state (``ChatEngine.snapshot``).
Snapshot = Callable[[str, Path | None], ChatSnapshot]


class Recorder(Protocol):
    """What records a session: the panes the app opens and closes, and the engine's frames."""

    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None: ...
    def pane_restored(self, pane_id: str, saved: SavedPane) -> None: ...
    def record(self, frame: Frame) -> None: ...
    def message_at(self, row: int) -> tuple[str, int] | None: ...
    def pane_closed(self, pane_id: str) -> None: ...
    def save_states(self, snapshot: Snapshot) -> None: ...


class NullRecorder:
    """Saves nothing (a run without a sessions store)."""

    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None:
        pass

    def pane_restored(self, pane_id: str, saved: SavedPane) -> None:
        pass

    def record(self, frame: Frame) -> None:
        pass

    def receive(self, event: EngineEvent) -> None:
        pass

    def start(self) -> None:
        pass

    def message_at(self, row: int) -> tuple[str, int] | None:
        return None

    def pane_closed(self, pane_id: str) -> None:
        pass

    def save_states(self, snapshot: Snapshot) -> None:
        pass


class SessionRecorder:
    """Writes one session: each pane's row, its messages as the engine's tree changes, and on
    quit its decode state. A user turn is written when the engine puts it in the chat's tree;
    a reply when it starts, then its text so far at most every :data:`CHECKPOINT_INTERVAL`,
    and whole, with its odds, when it ends (or as far as it came, when cut short).

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
        self.failing = False  # the last write failed (and the user was told)
        self._rows: dict[str, int] = {}  # pane id -> its row in the store
        self._unwritten: dict[str, tuple[ChatConfig, str]] = {}  # panes whose row failed
        self._lost: set[str] = set()  # panes that missed a write: their KV is not saved
        self._message_rows: dict[str, dict[int, int]] = {}  # pane -> its tree's ids -> rows
        self._written: dict[int, tuple[str, StopReason | None]] = {}  # row -> as written
        self._parents: dict[int, int | None] = {}  # row -> the row it follows
        self._head_rows: dict[str, int | None] = {}  # pane -> the last row of its branch
        self._configs: dict[str, ChatConfig] = {}  # pane -> its settings (its model)
        self._checkpoint_at: dict[int, float] = {}  # row of a reply streaming -> last write
        self._unsaved: dict[str, tuple[int, str]] = {}  # pane -> its reply's row, newer text

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
        self._configs[pane_id] = config
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

    def pane_restored(self, pane_id: str, saved: SavedPane) -> None:
        """A saved pane reopened: its tree keeps the stored messages' ids."""
        self._rows[pane_id] = saved.id
        self._configs[pane_id] = saved.config
        self._message_rows[pane_id] = {m.id: m.id for m in saved.tree}
        self._written.update({m.id: (m.text, m.stop_reason) for m in saved.tree})
        self._parents.update({m.id: m.parent for m in saved.tree})
        self._head_rows[pane_id] = saved.head

    def _model_changed(self, pane_id: str, model: str) -> None:
        """The chat answers with another model now: resume uses it."""
        config = self._configs.get(pane_id)
        if config is None or config.model == model:
            return
        config = self._configs[pane_id] = replace(config, model=model)
        row = self._row(pane_id)
        if row is not None:
            with self._writing(pane_id):
                self.store.update_pane_config(row, config)

    def _parent_row(self, pane_id: str, parent: int | None) -> int | None:
        """The row of the message ``parent`` (None: the pane's first). A parent never written
        (a failed write) stands in for by the branch's last row, so what follows stays on the
        branch; the pane then missed a write (its KV is not saved)."""
        if parent is None:
            return None
        row = self._message_rows.get(pane_id, {}).get(parent)
        if row is None:
            self._lost.add(pane_id)
            return self._head_rows.get(pane_id)
        return row

    def message_at(self, row: int) -> tuple[str, int] | None:
        """The pane and the tree id of the stored message ``row``, when a pane of this run
        holds it (a search hit in the session that is open)."""
        for pane_id, rows in self._message_rows.items():
            for message_id, written in rows.items():
                if written == row:
                    return pane_id, message_id
        return None

    def record(self, frame: Frame) -> None:
        """A frame of the engine: what it changed in each pane's chat."""
        for pane_id, delta in frame.deltas.items():
            self.frame(pane_id, delta)

    def frame(self, pane_id: str, delta: ChatDelta) -> None:
        """What a frame changed in the pane's chat; a reply that ended without its final
        message (its model's process died) is kept as far as it came."""
        if delta.model is not None:
            self._model_changed(pane_id, delta.model)
        for change in delta.tree_changes:
            self._follow(pane_id, change)
        if delta.finished is not None:
            self._save_unsaved(pane_id)

    def _save_unsaved(self, pane_id: str) -> None:
        unsaved = self._unsaved.pop(pane_id, None)
        if unsaved is not None:
            row, text = unsaved
            with self._writing(pane_id):
                self.store.update_message(row, text)
                self._written[row] = (text, None)

    def _follow(self, pane_id: str, change: TreeChange) -> None:
        """Write a tree change: the messages new or changed since written, then the branch
        shown. A whole new tree (a clear) that lacks messages written replaces them."""
        row = self._row(pane_id)
        if row is None:
            self._lost.add(pane_id)
            return
        rows = self._message_rows.setdefault(pane_id, {})
        if change.reset and not rows.keys() <= {m.id for m in change.messages}:
            with self._writing(pane_id):
                self.store.clear_pane(row)
                self._lost.discard(pane_id)  # nothing left to be missing
                rows.clear()
                self._head_rows[pane_id] = None
        for message in change.messages:
            self._write(pane_id, row, rows, message)
        head = rows.get(change.head) if change.head is not None else None
        if change.head is not None and head is None:
            self._lost.add(pane_id)  # its last message was never written
        elif head != self._head_rows.get(pane_id):
            with self._writing(pane_id):
                self.store.set_head(row, head)
                self._head_rows[pane_id] = head

    def _write(self, pane_id: str, row: int, rows: dict[int, int], message: TreeMessage) -> None:
        """One message, added or updated where it differs from what was written. Only a write
        that would be final can lose anything: a failed checkpoint is covered by the end."""
        # A reply streaming comes without its tokens; one ended (or copied) with them.
        final = message.role is Role.USER or message.stop is not None or bool(message.tokens)
        written = rows.get(message.id)
        wanted = rows.get(message.parent) if message.parent is not None else None
        if written is not None and wanted is not None and self._parents.get(written) != wanted:
            with self._writing(pane_id):  # a queued turn, moved below the reply before it
                self.store.set_parent(written, wanted)
                self._parents[written] = wanted
        if written is not None and self._written.get(written) == (message.text, message.stop):
            return
        if not final and written is not None:  # a reply streaming: a checkpoint is due?
            if self.clock() - self._checkpoint_at.get(written, 0.0) < CHECKPOINT_INTERVAL:
                self._unsaved[pane_id] = (written, message.text)
                return
            self._checkpoint_at[written] = self.clock()
        unsaved = self._unsaved.get(pane_id)
        if unsaved is not None and unsaved[0] == written:
            del self._unsaved[pane_id]  # this write has it
        with self._writing(pane_id if final else None):
            if written is None:
                parent = self._parent_row(pane_id, message.parent)
                written = self.store.add_message(row, message.role.value, message.text, parent)
                rows[message.id], self._head_rows[pane_id] = written, written
                self._parents[written] = parent
                self._written[written] = (message.text, None)
                self._checkpoint_at[written] = self.clock()
            if final and message.role is Role.ASSISTANT:
                model = message.model if message.model is not None else self._configs[pane_id].model
                odds = ReplyOdds(model, tuple(message.tokens)).to_json()
                self.store.update_message(written, message.text, odds, message.stop)
            elif self._written[written][0] != message.text:
                self.store.update_message(written, message.text)
            self._written[written] = (message.text, message.stop)

    def pane_closed(self, pane_id: str) -> None:
        self._unwritten.pop(pane_id, None)
        self._configs.pop(pane_id, None)
        self._save_unsaved(pane_id)  # its record keeps all the text it showed
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
            if saved.tree_change is not None:  # a reply cut short by quitting
                self._follow(pane_id, saved.tree_change)
            self._save_unsaved(pane_id)
            # A transcript that missed a write would not match the cells: read it again.
            state = None if pane_id in self._lost else saved.state
            with self._writing():
                self.store.save_state(row, state)
