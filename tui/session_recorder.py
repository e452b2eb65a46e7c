"""What the app saves as chats happen, written from what the engine's frames say (a finished
reply's text comes in its frame, never from a widget). :class:`NullRecorder` stands in when
nothing is saved, so the app never asks whether a store exists."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core import PanechatError
from core.chat import ChatConfig, ChatDelta, ChatSnapshot, TokenStat, TreeMessage
from core.chat.token_stats import ReplyOdds
from core.text.reasoning import ReasoningMarkers
from tui.session_store import SavedPane, SessionStore

#: Saves a pane's KV cells to a path and returns its decode state (``ChatEngine.snapshot``).
Snapshot = Callable[[str, Path | None], ChatSnapshot]


class Recorder(Protocol):
    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None: ...
    def pane_restored(self, pane_id: str, saved: SavedPane) -> None: ...
    def pane_changed(self, pane_id: str, config: ChatConfig) -> None: ...
    def message(self, pane_id: str, message: TreeMessage) -> None: ...
    def frame(self, pane_id: str, delta: ChatDelta, reply: TreeMessage | None = None) -> None: ...
    def branch_shown(self, pane_id: str, head: int | None) -> None: ...
    def message_at(self, row: int) -> tuple[str, int] | None: ...
    def pane_cleared(self, pane_id: str) -> None: ...
    def pane_closed(self, pane_id: str) -> None: ...
    def save_states(self, snapshot: Snapshot) -> None: ...


class NullRecorder:
    """Saves nothing (a run without a sessions store)."""

    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None:
        pass

    def pane_restored(self, pane_id: str, saved: SavedPane) -> None:
        pass

    def pane_changed(self, pane_id: str, config: ChatConfig) -> None:
        pass

    def message(self, pane_id: str, message: TreeMessage) -> None:
        pass

    def frame(self, pane_id: str, delta: ChatDelta, reply: TreeMessage | None = None) -> None:
        pass

    def branch_shown(self, pane_id: str, head: int | None) -> None:
        pass

    def message_at(self, row: int) -> tuple[str, int] | None:
        return None

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

    parent: int | None  # the row of the message it answers
    tree_id: int | None = None  # its id in the pane's tree (None: a frame no pane showed)
    text: str = ""
    tokens: list[TokenStat] = field(default_factory=list)  # its tokens' odds so far
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
        self._message_rows: dict[str, dict[int, int]] = {}  # pane -> its tree's ids -> rows
        self._head_rows: dict[str, int | None] = {}  # pane -> the last row of its branch
        self._row_parents: dict[int, int | None] = {}  # row -> the row it follows
        self._models: dict[str, str] = {}  # pane -> the model it answers with ("" default)

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
        self._models[pane_id] = config.model
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
        self._models[pane_id] = saved.config.model
        self._message_rows[pane_id] = {m.id: m.id for m in saved.tree}
        self._row_parents.update({m.id: m.parent for m in saved.tree})
        self._head_rows[pane_id] = saved.head

    def pane_changed(self, pane_id: str, config: ChatConfig) -> None:
        """The pane's settings changed (it answers with another model): resume uses these."""
        self._models[pane_id] = config.model
        row = self._row(pane_id)
        if row is not None:
            with self._writing(pane_id):
                self.store.update_pane_config(row, config)

    def message(self, pane_id: str, message: TreeMessage) -> None:
        """A user turn (or a fork's copied message), after the message it follows."""
        row = self._row(pane_id)
        if row is None:
            self._lost.add(pane_id)
            return
        parent = self._parent_row(pane_id, message.parent)
        with self._writing(pane_id):
            written = self.store.add_message(row, message.role.value, message.text, parent)
            self._wrote(pane_id, message.id, written, parent)

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

    def _wrote(self, pane_id: str, message_id: int | None, row: int, parent: int | None) -> None:
        if message_id is not None:
            self._message_rows.setdefault(pane_id, {})[message_id] = row
        self._head_rows[pane_id] = row
        self._row_parents[row] = parent

    def message_at(self, row: int) -> tuple[str, int] | None:
        """The pane and the tree id of the stored message ``row``, when a pane of this run
        holds it (a search hit in the session that is open)."""
        for pane_id, rows in self._message_rows.items():
            for message_id, written in rows.items():
                if written == row:
                    return pane_id, message_id
        return None

    def branch_shown(self, pane_id: str, head: int | None) -> None:
        """The pane shows another branch, the one that ends at message ``head``."""
        pane_row = self._row(pane_id)
        row = self._message_rows.get(pane_id, {}).get(head) if head is not None else None
        if pane_row is None or (head is not None and row is None):
            self._lost.add(pane_id)
            return
        with self._writing(pane_id):
            self.store.set_head(pane_row, row)
            self._head_rows[pane_id] = row

    def frame(self, pane_id: str, delta: ChatDelta, reply: TreeMessage | None = None) -> None:
        """What a frame says: a reply that started (``reply``, the pane's message for it: a
        regeneration is a sibling of the last one), streams (checkpointed), or finished."""
        row = self._row(pane_id)
        if row is None:
            self._lost.add(pane_id)
            return
        if delta.started:
            self._start_reply(pane_id, row, delta, reply)
        streaming = self._streaming.get(pane_id)
        if streaming is not None and delta.finished is None:
            streaming.text += delta.text
            streaming.reasoning += delta.reasoning
            streaming.tokens += delta.tokens
            so_far = ReasoningMarkers().join(streaming.reasoning, streaming.text)
            if self.clock() - streaming.written_at >= CHECKPOINT_INTERVAL and so_far:
                self._write_reply(pane_id, row, streaming, so_far)
        if delta.finished is not None:
            if streaming is not None:
                tokens = [*streaming.tokens, *delta.tokens]
                streaming.tokens = tokens[: len(tokens) - delta.tokens_dropped]
            self._reply_ended(pane_id, row, delta.reply_text)

    def _start_reply(
        self, pane_id: str, row: int, delta: ChatDelta, reply: TreeMessage | None
    ) -> None:
        """Write the reply's row at once (empty), after the message it answers: a turn sent
        while it streams then follows it. Without ``reply`` (a frame the screen never showed,
        saved at quit) it follows the branch's last row, or, regenerated, takes its place."""
        if reply is not None:
            parent = self._parent_row(pane_id, reply.parent)
        else:
            parent = self._head_rows.get(pane_id)
            if delta.replaces_last and parent is not None:
                parent = self._row_parents.get(parent)
        tree_id = reply.id if reply else None
        streaming = StreamingReply(parent, tree_id, written_at=self.clock())
        self._streaming[pane_id] = streaming
        with self._writing():  # a failure here is covered by the final write
            streaming.message_id = self.store.add_message(row, "assistant", "", parent)
            self._wrote(pane_id, tree_id, streaming.message_id, parent)

    def _write_reply(
        self, pane_id: str, row: int, reply: StreamingReply, text: str, *, final: bool = False
    ) -> None:
        """A checkpoint, or (``final``) the whole reply with its tokens' odds: only a final
        write that fails loses anything (a failed checkpoint is covered by the final one)."""
        reply.written_at = self.clock()
        with self._writing(pane_id if final else None):
            odds = ReplyOdds(self._models.get(pane_id, ""), tuple(reply.tokens))
            if reply.message_id is None:  # its row could not be written when it started
                reply.message_id = self.store.add_message(row, "assistant", text, reply.parent)
                self._wrote(pane_id, reply.tree_id, reply.message_id, reply.parent)
            self.store.update_message(reply.message_id, text, odds.to_json() if final else None)

    def _reply_ended(self, pane_id: str, row: int, text: str | None) -> None:
        """Save a finished reply whole (None: cancelled by a clear, nothing to keep)."""
        reply = self._streaming.pop(pane_id, None) or StreamingReply(self._head_rows.get(pane_id))
        if text is not None:
            self._write_reply(pane_id, row, reply, text, final=True)

    def pane_cleared(self, pane_id: str) -> None:
        self._streaming.pop(pane_id, None)  # its late frames write nothing
        row = self._row(pane_id)
        if row is not None:
            with self._writing(pane_id):
                self.store.clear_pane(row)
                self._lost.discard(pane_id)  # nothing left to be missing
                self._message_rows.pop(pane_id, None)
                self._head_rows.pop(pane_id, None)

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
