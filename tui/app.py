"""The panechat app: side-by-side chat panes served by one shared decode loop."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Protocol

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.driver import Driver
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.theme import Theme
from textual.timer import Timer
from textual.widgets import TextArea

from core.chat import (
    BranchAtToken,
    ChatConfig,
    ChatSnapshot,
    ChatTree,
    ClearChat,
    CloseChat,
    EditMessage,
    EngineEvent,
    ForkChat,
    Frame,
    FrameStats,
    GroupCommand,
    ModelLoading,
    Notice,
    NoticeKind,
    OpenChat,
    Regenerate,
    Restore,
    Role,
    SendTurn,
    ShowMessage,
    StopChat,
    SwitchModel,
)
from core.text.printable import printable
from tui.bindings import APP_BINDINGS, KeyNames
from tui.clipboard import copy_with_system_tool
from tui.config import AppConfig, save_theme_choice
from tui.export import (
    PaneTranscript,
    branches_markdown,
    pane_markdown,
    session_markdown,
    write_export,
)
from tui.frame_buffer import MIN_TIMER_DELAY, FrameBuffer
from tui.frame_inbox import FrameInbox
from tui.gc_policy import GcPolicy
from tui.messages import (
    DecodeStopped,
    EngineFailed,
    FrameUpdate,
    ModelLoadProgress,
    message_for,
)
from tui.notice_text import notice_text
from tui.open_session import OpenSession
from tui.screens.branch_screen import BranchScreen
from tui.screens.compare_screen import CompareScreen
from tui.screens.help_screen import HelpScreen
from tui.screens.search_screen import SearchScreen
from tui.screens.sessions_screen import SessionsScreen
from tui.screens.token_screen import TokenChoice, TokenScreen
from tui.session_recorder import NullRecorder, Recorder, SessionRecorder
from tui.session_search import SearchHit
from tui.session_store import SavedPane, SessionStore
from tui.themes import load_themes
from tui.widgets.chat_pane import ChatPane
from tui.widgets.fitting_footer import FittingFooter
from tui.widgets.pane_row import PaneModel, PaneRow
from tui.widgets.status_bar import StatusBar

#: Seconds quitting waits for the decode thread to stop before the KV cells are saved
#: (a decode is cancelled at its next step; this is for one that will not stop).
SHUTDOWN_WAIT = 5.0
#: A quit that takes longer than this says what it is doing, and how to skip it.
QUIT_NOTICE_AFTER = 0.5


class DecodeSource(Protocol):
    """What the app needs from the decode loop (a scripted fake in layout tests)."""

    def start(self) -> None: ...
    def submit(self, *commands: GroupCommand) -> None: ...
    def shutdown(self, timeout: float = 5.0) -> bool: ...
    def snapshot(self, pane_id: str, path: Path | None) -> ChatSnapshot: ...
    def close(self) -> None: ...


class PanechatApp(App[OpenSession | None]):
    """The panes, drawn from the chat engine's frames: frames are buffered and applied
    together, one screen update for all panes, when :class:`FrameBuffer` says it is due.
    It exits with the saved session to open next, if the user chose one."""

    CSS_PATH = "app.tcss"
    TITLE = "panechat"
    BINDINGS: ClassVar[list[BindingType]] = [*APP_BINDINGS]

    def __init__(
        self,
        config: AppConfig,
        source: DecodeSource,
        *,
        model_name: str = "",
        backend: str = "CPU",
        panes: int | None = None,
        persist_theme: bool = True,
        export_dir: Path | None = None,
        store: SessionStore | None = None,
        session_id: int | None = None,
        restore: list[SavedPane] | None = None,
        reveal: int | None = None,
        driver_class: type[Driver] | None = None,
    ) -> None:
        super().__init__(driver_class=driver_class)
        self.export_dir = export_dir or Path.cwd()
        self.store = store
        self.restore = restore or []
        self.reveal = reveal  # a saved message of ``restore`` to scroll to (a search hit)
        self.session_id = session_id
        self.save_failures: list[str] = []  # what could not be saved, to print after quit
        if store is not None and session_id is None:
            try:
                self.session_id = store.create_session()
            except (sqlite3.Error, OSError) as e:
                self.save_failures.append(f"this session is not saved: {e}")
        self.recorder: Recorder = (
            SessionRecorder(store, self.session_id, self._save_failed)
            if store is not None and self.session_id is not None
            else NullRecorder()
        )
        self.config = config
        self.source = source
        self.model_name = model_name
        self.backend = backend
        self.initial_panes = self._initial_panes(panes)
        self.persist_theme = persist_theme
        self.saved_theme = config.theme  # what the user config file says
        self.quitting = False  # a quit is under way (the decode thread is being stopped)
        self.hurry = False  # a second quit came: exit without waiting for the decode thread
        self.keys = KeyNames(config.keys)
        self.frames_seen: list[FrameUpdate] = []  # the last few, for tests and the bench
        self.frame_buffer = FrameBuffer(config.update_interval)
        self.inbox = FrameInbox()
        self.model_stats: dict[str, FrameStats] = {}  # each model's last figures ("": default)
        self.loading_models: dict[str, str] = {}  # models loading for panes: their progress
        self._flush_timer: Timer | None = None
        self.gc_policy = GcPolicy()
        self.pane_row = PaneRow(config.context.n_ctx, self.keys)
        self.status_bar = StatusBar(id="status")
        for theme in load_themes():
            self.register_theme(theme)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """As Textual's, but the message is plain text by default: notices carry pane names,
        paths and error messages ("[Errno 13]"), which must show as written, never as markup
        or terminal escapes."""
        super().notify(
            message if markup else printable(message),
            title=title,
            severity=severity,
            timeout=timeout,
            markup=markup,
        )

    def _save_failed(self, message: str) -> None:
        self.save_failures.append(message)
        self.notify(message, severity="error", timeout=15)

    def _initial_panes(self, count: int | None) -> list[ChatConfig]:
        panes = list(self.config.panes) or [self.config.pane_defaults]
        if count is None:
            return panes
        return [self._pane_config(i, panes) for i in range(count)]

    def _pane_config(self, index: int, panes: list[ChatConfig] | None = None) -> ChatConfig:
        panes = panes if panes is not None else list(self.config.panes)
        if index < len(panes):
            return panes[index]
        return replace(self.config.pane_defaults, name=f"Pane {index + 1}")

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield self.pane_row
        status = self.status_bar
        status.model_name = self.model_name
        status.backend = self.backend
        status.context_size = self.config.context.n_ctx
        yield status
        yield FittingFooter()

    async def on_mount(self) -> None:
        self._on_termination(True)
        if self.config.keys:
            self.set_keymap(self.config.keys)
        self.theme = self.config.theme
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        revealing: ChatPane | None = None  # the restored pane that holds self.reveal
        if self.restore:
            for saved in self.restore:
                pane = await self.add_pane(saved.config, saved=saved)
                if self.reveal is not None and any(m.id == self.reveal for m in saved.tree):
                    revealing = pane
            restored = sum(len(saved.messages) for saved in self.restore)
            self.notify(f"resumed {len(self.restore)} panes, {restored} messages")
        else:
            for pane_config in self.initial_panes:
                await self.add_pane(pane_config)
        self.source.start()
        self.panes[0].input.focus()
        if self.restore and self.reveal is not None:
            await self._reveal(revealing, self.reveal)
        for failure in self.save_failures:  # before the first pane opened
            self.notify(failure, severity="error", timeout=15)
        self.gc_policy.apply()

    def _on_theme_changed(self, theme: Theme) -> None:
        """Remember a theme the user chose (only then: a start writes nothing)."""
        if not self.persist_theme or theme.name == self.saved_theme:
            return
        try:
            path = save_theme_choice(theme.name)
        except OSError as e:
            self._save_failed(f"the theme is used but not saved: {e}")
            return
        self.saved_theme = theme.name
        self.log(f"theme saved to {path}")

    @property
    def panes(self) -> list[ChatPane]:
        return self.pane_row.panes

    def focused_pane(self) -> ChatPane | None:
        return self.pane_row.pane_holding(self.focused)

    async def add_pane(
        self,
        pane_config: ChatConfig,
        *,
        fork_of: ChatPane | None = None,
        saved: SavedPane | None = None,
    ) -> ChatPane | None:
        """Open a pane; with ``fork_of``, one that continues from that pane's current point
        and shares its history in the KV cache."""
        if len(self.panes) >= self.config.context.n_seq_max:
            self.notify(
                f"at most {self.config.context.n_seq_max} panes — raise n_seq_max in "
                "[context] of config.toml",
                severity="warning",
            )
            return None
        row = self.pane_row
        if saved is not None:
            tree = saved.chat_tree()
            pane = await row.open(
                pane_config,
                tree=tree,
                branched_from=saved.branched_from,
                model=self._model_of(pane_config),
            )
            self.recorder.pane_restored(pane.pane_id, saved)
            if saved.state_damaged:
                notice = Notice(NoticeKind.STATE_NOT_USED, "its record is damaged")
                await pane.add_notice(f"⚠ {notice_text(notice, self.keys)}")
            self.source.submit(
                OpenChat(pane.pane_id, pane_config, Restore(saved.messages, saved.state, tree))
            )
            return pane
        if fork_of is None:
            pane = await row.open(pane_config, model=self._model_of(pane_config))
            self.recorder.pane_opened(pane.pane_id, pane_config, pane.branched_from)
            self.source.submit(OpenChat(pane.pane_id, pane_config))
            return pane
        branch = fork_of.chat_tree.path()
        turns = sum(1 for message in branch if message.role is Role.USER)
        origin = f"{fork_of.config.name} after {turns} turn{'s' * (turns != 1)}"
        pane_config = replace(pane_config, model=fork_of.config.model)  # a branch stays on it
        pane = await row.open(
            pane_config,
            after=fork_of,
            tree=ChatTree.along(branch),
            branched_from=origin,
            model=self._model_of(pane_config),
        )
        self.recorder.pane_opened(pane.pane_id, pane_config, pane.branched_from)
        self.source.submit(ForkChat(fork_of.pane_id, pane.pane_id, pane_config))
        return pane

    def _model_of(self, pane_config: ChatConfig) -> PaneModel:
        """How a pane shows its model: the name in its title, and that model's context size."""
        return PaneModel(
            self.model_label(pane_config.model), self.config.context_size(pane_config.model)
        )

    def model_label(self, model: str) -> str:
        """A model's name in titles, exports and the compare view; "" while every pane is on
        the one default model (nothing to tell apart)."""
        if not self.config.named_models():
            return ""
        key = self.config.model_key(model)
        return key or self.config.model_alias or self.model_name or "default"

    def switch_model(self, model: str) -> None:
        """The focused pane answers with ``model`` from now on: the chat is read again there."""
        pane = self.focused_pane()
        if pane is None:
            return
        if self.config.model_key(pane.config.model) == self.config.model_key(model):
            self.notify(f"{printable(pane.config.name)} already answers with that model")
            return
        transcript = pane.messages(reasoning=True)  # for a pane whose own model never loaded
        self.source.submit(SwitchModel(pane.pane_id, model, pane.config, transcript))

    # -- messages --------------------------------------------------------------------------

    async def on_chat_pane_sent(self, event: ChatPane.Sent) -> None:
        await self.send_to(event.pane, event.text)

    async def send_to(self, pane: ChatPane, text: str) -> None:
        if pane.editing is not None:
            await self._send_edit(pane, text)
            return
        await pane.show_sent(text)
        self.source.submit(SendTurn(pane.pane_id, text))

    async def _send_edit(self, pane: ChatPane, text: str) -> None:
        """A new version of a user message: the old one and the branch below it stay, as a
        sibling; the model goes on from the messages before it."""
        if pane.generating:
            self.notify(notice_text(Notice(NoticeKind.BUSY, "editing"), self.keys))
            pane.input.load_text(text)
            return
        assert pane.editing is not None
        self.source.submit(EditMessage(pane.pane_id, pane.editing, text))
        pane.cancel_edit()  # the engine's frame shows the new branch

    def receive(self, event: EngineEvent) -> None:
        """The engine's callback, in the engine's thread: keep the frame until it is handled
        (see FrameInbox) and wake the app with it (``post_message`` is thread-safe)."""
        if isinstance(event, Frame):
            self.inbox.put(event)
        self.post_message(message_for(event))

    def on_frame_update(self, event: FrameUpdate) -> None:
        self.inbox.take()
        self.frames_seen = [*self.frames_seen[-63:], event]
        # Each model's frames carry its own figures; the buffer paces updates by the panes
        # generating on every model.
        if event.stats.decoded:
            self.model_stats[event.model] = event.stats
        generating = sum(s.generating for s in self.model_stats.values())
        stats = replace(self.model_stats.get("", event.stats), generating=generating)
        now = time.monotonic()
        due = self.frame_buffer.add(event.deltas, stats, now)
        if due is None:
            return  # an update is already due no later
        if self._flush_timer is not None:
            self._flush_timer.stop()
        self._schedule_flush(due - now)

    def _schedule_flush(self, delay: float) -> None:
        """Flush after ``delay``, or at once where a timer might never fire."""
        if delay < MIN_TIMER_DELAY:
            self._flush_timer = None
            self.call_later(self._flush_frames)
        else:
            self._flush_timer = self.set_timer(delay, self._flush_frames)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.frame_buffer.key_pressed(time.monotonic())
        await super().on_event(event)

    async def _flush_frames(self) -> None:
        """Apply every buffered frame: one screen update for all of them."""
        now = time.monotonic()
        hold = self.frame_buffer.hold(now)
        if hold:
            self._schedule_flush(hold)  # the key goes first
            return
        self._flush_timer = None
        pending, stats = self.frame_buffer.take(now)
        panes = self.pane_row.by_id()
        with self.batch_update():
            for pane_id, deltas in pending.items():
                pane = panes.get(pane_id)
                if pane is None:
                    continue
                for delta in deltas:
                    if delta.model is not None:  # it answers with another model now
                        model = delta.model
                        label, size = self.model_label(model), self.config.context_size(model)
                        pane.answer_with(model, label, size)
                        self.recorder.pane_changed(pane_id, pane.config)
                    await pane.apply(delta)
                    self.recorder.frame(pane_id, delta)
            if stats is not None and self.status_bar.is_attached:  # not once shutting down
                self._show_stats()
        if self.status_bar.is_attached:
            # The batch held the screen's update back, and ending it wakes only the app:
            # without this, what was applied can wait for some other widget to repaint.
            self.screen.check_idle()

    def _show_stats(self) -> None:
        """The status bar: the default model's figures, then each other model's in use."""
        used = {self.config.model_key(p.config.model) for p in self.panes}
        self.model_stats = {m: s for m, s in self.model_stats.items() if not m or m in used}
        self.status_bar.stats = self.model_stats.get("", FrameStats())
        self.status_bar.others = tuple(
            (self.model_label(m), s) for m, s in self.model_stats.items() if m
        )

    def receive_loading(self, loading: ModelLoading) -> None:
        """How a model's load goes, in its loader thread: to the app's loop."""
        self.post_message(ModelLoadProgress(loading))

    def on_model_load_progress(self, event: ModelLoadProgress) -> None:
        """The status bar says which models load, and how far, until each is done."""
        loading = event.loading
        if loading.done:
            self.loading_models.pop(loading.model, None)
        else:
            self.loading_models[loading.model] = loading.text()
        if self.status_bar.is_attached:
            self.status_bar.models_loading = tuple(self.loading_models.values())

    def on_engine_failed(self, event: EngineFailed) -> None:
        self.notify(f"{event.error} — restart panechat", severity="error", timeout=30)

    # -- actions ---------------------------------------------------------------------------

    def action_focus_pane(self, step: int) -> None:
        current = self.focused_pane()
        if current is not None:
            self.pane_row.neighbour(current, step).input.focus()

    async def action_new_pane(self) -> None:
        pane = await self.add_pane(self._pane_config(self.pane_row.opened))
        if pane is not None:
            pane.input.focus()

    async def action_close_pane(self) -> None:
        pane = self.focused_pane()
        if pane is None:
            return
        if len(self.panes) == 1:
            quit_key = self.keys.key("app.quit")
            self.notify(f"the last pane stays open — quit with {quit_key}", severity="warning")
            return
        self.source.submit(CloseChat(pane.pane_id))
        self.recorder.pane_closed(pane.pane_id)
        self.frame_buffer.drop(pane.pane_id)
        self.action_focus_pane(1)
        await self.pane_row.close(pane)

    def action_stop(self) -> None:
        """Esc: stop the focused pane's reply, else drop an edit or the selection, else leave
        the maximized view."""
        pane = self.focused_pane()
        if pane is not None and pane.generating:
            self.source.submit(StopChat(pane.pane_id))
        elif pane is not None and pane.editing is not None:
            pane.cancel_edit()  # the old version stays; the input lets the new one go
            pane.input.clear()
        elif pane is not None and pane.selected is not None:
            pane.deselect()
        elif self.screen.maximized is not None:
            self.screen.minimize()

    def action_stop_all(self) -> None:
        for pane in self.panes:
            self.source.submit(StopChat(pane.pane_id))

    def action_broadcast(self) -> None:
        pane = self.focused_pane()
        if pane is not None:
            # Ctrl+B is the app's binding and runs at once, while the keys typed just before
            # it may still wait in the input's own queue: read the text after them.
            pane.input.call_later(self._broadcast_from, pane)

    async def _broadcast_from(self, pane: ChatPane) -> None:
        text = pane.input.text.strip()
        if not text:
            self.notify(
                f"type a message first, then broadcast it with {self.keys.key('input.broadcast')}"
            )
            return
        pane.input.clear()
        panes = [p for p in self.panes if p.in_broadcast_set] or self.panes
        for target in panes:
            await target.show_sent(text)
        self.source.submit(*(SendTurn(target.pane_id, text) for target in panes))

    def action_toggle_maximize(self) -> None:
        pane = self.focused_pane()
        if self.screen.maximized is not None:
            self.screen.minimize()
        elif pane is not None:
            self.screen.maximize(pane)

    async def action_clear_pane(self) -> None:
        pane = self.focused_pane()
        if pane is not None:
            self.source.submit(ClearChat(pane.pane_id))  # its frame clears the saved chat
            self.frame_buffer.drop(pane.pane_id)
            await pane.clear_transcript()

    def action_copy_reply(self) -> None:
        pane = self.focused_pane()
        if pane is None or not pane.last_reply:
            self.notify("no reply to copy yet")
            return
        # Always send OSC 52 too: over SSH the local terminal's clipboard is the one wanted.
        self.copy_to_clipboard(pane.last_reply)
        how = "system clipboard" if copy_with_system_tool(pane.last_reply) else "OSC 52"
        self.notify(f"copied the last reply ({how})")

    def action_toggle_broadcast_set(self) -> None:
        pane = self.focused_pane()
        if pane is None:
            return
        chosen = pane.toggle_broadcast_set()
        count = sum(p.in_broadcast_set for p in self.panes)
        target = f"the {count} chosen panes" if count else "every pane"
        self.notify(
            f"{pane.config.name} {'joins' if chosen else 'leaves'}; "
            f"{self.keys.key('input.broadcast')} sends to {target}"
        )

    def action_compare(self) -> None:
        replies = [pane.reply_summary() for pane in self.panes]
        if not any(r.text for r in replies):
            broadcast = self.keys.key("input.broadcast")
            self.notify(f"no replies to compare yet — broadcast a question with {broadcast}")
            return
        self.push_screen(CompareScreen(replies))

    async def action_fork_pane(self, greedy: bool = False) -> None:
        """Branch the focused pane into a new one (after its reply in flight, if any),
        optionally sampling greedily instead of with the pane's settings."""
        source = self.focused_pane()
        if source is None:
            return
        config = replace(source.config, name=f"{source.config.name} ⑂")
        if greedy:
            config = replace(config, sampling=replace(config.sampling, temperature=0.0))
        pane = await self.add_pane(config, fork_of=source)
        if pane is not None:
            pane.input.focus()
            if source.generating:
                self.notify("the branch starts when the current reply is complete")

    def _idle_focused_pane(self, doing: str) -> ChatPane | None:
        """The focused pane, unless a reply is still streaming into it (then say so)."""
        pane = self.focused_pane()
        if pane is not None and pane.generating:
            self.notify(notice_text(Notice(NoticeKind.BUSY, doing), self.keys))
            return None
        return pane

    def _still_idle(self, pane: ChatPane, doing: str) -> bool:
        """A screen's choice for ``pane`` applies only if the pane is still there and no
        reply began meanwhile (then say so)."""
        if not pane.is_attached:
            return False
        if pane.generating:
            self.notify(notice_text(Notice(NoticeKind.BUSY, doing), self.keys))
            return False
        return True

    def action_regenerate(self) -> None:
        if (pane := self._idle_focused_pane("regenerating")) is not None:
            self.source.submit(Regenerate(pane.pane_id))

    def action_select_message(self, step: int) -> None:
        """Alt+Up / Alt+Down: choose the message the edit and version keys act on."""
        pane = self.focused_pane()
        if pane is not None and not pane.select(step) and not pane.messages():
            self.notify("no messages in this pane yet")

    def action_edit_message(self) -> None:
        """Load the selected user message (else the last) into the input: Enter sends the
        new version as a sibling branch, Esc keeps the old one."""
        pane = self._idle_focused_pane("editing")
        if pane is not None and not pane.start_edit():
            self.notify("no message of yours to edit in this pane yet")

    async def action_page_branch(self, step: int) -> None:
        """Alt+Left / Alt+Right: the previous or next version of the selected message (else
        of the last reply), with its branch: the model goes on from there."""
        pane = self._idle_focused_pane("switching the branch")
        if pane is None:
            return
        sibling = pane.version(step)
        if sibling is None:
            which = "of the selected message" if pane.selected is not None else "of the last reply"
            edit, regenerate = self.keys.key("message.edit"), self.keys.key("pane.regenerate")
            self.notify(
                f"no {'earlier' if step < 0 else 'later'} version {which} — {edit} edits a "
                f"message, {regenerate} regenerates the last reply"
            )
            return
        self.source.submit(ShowMessage(pane.pane_id, sibling))

    def _show(self, pane: ChatPane, message_id: int) -> None:
        """Select a message and scroll to it; on another branch, the engine shows that branch
        (the model reads it: what its KV shares with it stays) and the pane draws it."""
        if not pane.reveal(message_id):
            self.source.submit(ShowMessage(pane.pane_id, message_id))

    def action_branches(self) -> None:
        """The focused pane's branches as a tree: choosing a message shows its branch. Again:
        close the tree."""
        if isinstance(self.screen, BranchScreen):
            self.screen.dismiss(None)
            return
        pane = self._idle_focused_pane("switching the branch")
        if pane is None:
            return
        if not len(pane.chat_tree):
            self.notify("no messages in this pane yet")
            return

        async def chosen(message_id: int | None) -> None:
            if message_id is None or not self._still_idle(pane, "switching the branch"):
                return
            self._show(pane, message_id)

        self.push_screen(BranchScreen(pane.config.name, pane.chat_tree), chosen)

    def action_tokens(self) -> None:
        """The selected reply (else the last) token by token, shaded by probability: choose
        another token the model weighed to branch there. Again: close the view."""
        if isinstance(self.screen, TokenScreen):
            self.screen.dismiss(None)
            return
        pane = self._idle_focused_pane("branching at a token")
        if pane is None:
            return
        reply = pane.reply_for_tokens()
        if reply is None or not reply.tokens or reply.parent is None:
            self.notify(
                "no token odds for this reply — replies written by this version of panechat "
                "keep them; select one with "
                f"{self.keys.key('message.previous')}"
            )
            return

        def chosen(choice: TokenChoice | None) -> None:
            if choice is None or not self._still_idle(pane, "branching"):
                return
            token = choice.alternative.token
            self.source.submit(BranchAtToken(pane.pane_id, reply.id, choice.index, token))

        # A reply another model wrote is shown as that model weighed it; branching there is
        # checked against the pane's model, token by token, by the decode loop.
        written_by = None
        if reply.model is not None and self.config.model_key(reply.model) != self.config.model_key(
            pane.config.model
        ):
            written_by = self.model_label(reply.model) or reply.model
        self.push_screen(TokenScreen(pane.config.name, reply.tokens, written_by), chosen)

    def transcripts(self, *, reasoning: bool = False) -> list[PaneTranscript]:
        return [pane.transcript_for_export(reasoning=reasoning) for pane in self.panes]

    def action_export_pane(self) -> None:
        """The focused pane to its own Markdown file."""
        pane = self.focused_pane()
        if pane is None:
            return
        self._export(pane_markdown(pane.transcript_for_export()) + "\n", "panechat-pane")

    def action_export_branches(self) -> None:
        """The focused pane's every branch, each one whole, to its own Markdown file."""
        pane = self.focused_pane()
        if pane is None:
            return
        self._export(branches_markdown(pane.branch_transcripts()), "panechat-branches")

    def action_export_session(self, reasoning: bool = False) -> None:
        """Every pane to one Markdown file, panes as sections, in the export directory; the
        replies' reasoning only when asked (palette: "Export session with reasoning")."""
        self._export(session_markdown(self.transcripts(reasoning=reasoning)), "panechat")

    def _export(self, text: str, stem: str) -> None:
        try:
            path = write_export(text, self.export_dir, stem)
        except OSError as e:
            self.notify(
                f"could not export: {e} — check that the folder is writable", severity="error"
            )
            return
        self.notify(f"exported to {path}")

    def action_sessions(self) -> None:
        """Saved sessions: open one (this app exits and the chosen one starts), rename, delete."""
        if self.store is None:
            self.notify("sessions are not being saved in this run")
            return

        def opened(session_id: int | None) -> None:
            if session_id is not None:
                self.exit(OpenSession(session_id))  # cli.main reopens with that session

        self.push_screen(SessionsScreen(self.store, self.session_id), opened)

    def action_search(self) -> None:
        """Search every saved chat; a hit in a pane of this run is shown there, any other
        reopens the app on its session (as the sessions screen does), scrolled to it."""
        if self.store is None:
            self.notify("sessions are not being saved in this run")
            return
        if isinstance(self.screen, SearchScreen):  # Ctrl+F again, from its own input
            return

        async def chosen(hit: SearchHit | None) -> None:
            if hit is None:
                return
            here = self.recorder.message_at(hit.message_id)
            pane = self.pane_row.by_id().get(here[0]) if here is not None else None
            if pane is None or here is None:
                self.exit(OpenSession(hit.session_id, hit.message_id))
                return
            pane.input.focus()
            if pane.generating:  # its branch cannot move now: show where it is
                self.notify(f"found in {pane.config.name}, which is answering — look again after")
                return
            self._show(pane, here[1])

        self.push_screen(SearchScreen(self.store), chosen)

    async def _reveal(self, pane: ChatPane | None, message_id: int) -> None:
        """Scroll the reopened session to the search hit it was opened for."""
        if pane is None or message_id not in pane.chat_tree:
            self.notify("the message searched for is not in the panes that reopened")
        else:
            self._show(pane, message_id)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.keys.help_rows()))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            if binding.id in ("app.quit", "app.help", "app.interrupt"):
                continue
            yield SystemCommand(
                binding.description,
                f"{binding.description} ({binding.key})",
                lambda action=binding.action: self.run_action(action),
            )
        yield SystemCommand(
            "Fork pane, greedy",
            "Branch the focused pane; the branch samples greedily (temperature 0)",
            lambda: self.run_action("fork_pane(True)"),
        )
        yield SystemCommand(
            "Export pane", "The focused pane to its own Markdown file", self.action_export_pane
        )
        yield SystemCommand(
            "Export pane with every branch",
            "The focused pane's branches, each one whole, to one Markdown file",
            self.action_export_branches,
        )
        yield SystemCommand(
            "Export session with reasoning",
            "Every pane to one Markdown file, with the replies' reasoning",
            lambda: self.action_export_session(reasoning=True),
        )
        yield SystemCommand("Keys", "Show every key binding", self.action_help)
        if self.config.named_models():
            for model in ("", *self.config.named_models()):
                label = self.model_label(model)
                yield SystemCommand(
                    f"Answer with {label}",
                    f"The focused pane answers with {label} from now on (it reads the chat again)",
                    lambda model=model: self.switch_model(model),
                )

    def _on_termination(self, listen: bool) -> None:
        """SIGTERM (a shutdown, ``kill``, a closed SSH session's supervisor) quits as Ctrl+Q
        does, saving every pane. Only where the app runs on the main thread's loop."""
        try:
            loop = asyncio.get_running_loop()
            if listen:
                loop.add_signal_handler(signal.SIGTERM, lambda: self.call_next(self.action_quit))
            else:
                loop.remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # Windows, or not the main thread: the default (no save) stays

    async def action_interrupt(self) -> None:
        """Ctrl+C: copy the input's selection if there is one, else quit (and save)."""
        focused = self.focused
        if isinstance(focused, TextArea) and focused.selected_text:
            focused.action_copy()
        else:
            await self.action_quit()

    async def action_quit(self) -> None:
        """Ctrl+Q, Ctrl+C, SIGTERM: stop the decode thread (off the UI thread, in a worker),
        then exit, saving every pane. A second quit meanwhile exits at once: transcripts are
        saved as ever, the KV cells of a decode that would not stop are not."""
        if self.quitting:
            self.hurry = True
            self.exit()
            return
        self.quitting = True
        self.set_timer(QUIT_NOTICE_AFTER, self._say_saving)
        # A daemon thread, not an executor's: a decode that never stops must not keep the
        # process alive after the second quit.
        threading.Thread(target=self._stop_decoding, name="panechat-quit", daemon=True).start()

    def _stop_decoding(self) -> None:
        """In its own thread: wait for the decode thread, then tell the app."""
        self.source.shutdown(SHUTDOWN_WAIT)
        self.post_message(DecodeStopped())

    def on_decode_stopped(self, _event: DecodeStopped) -> None:
        self.exit()

    def _say_saving(self) -> None:
        if self.is_running and not self.hurry:
            quit_key = self.keys.key("app.interrupt")
            self.notify(f"saving the panes… press {quit_key} again to quit without waiting")

    async def on_unmount(self) -> None:
        self._on_termination(False)
        stopped = self.source.shutdown(timeout=0.0 if self.hurry else SHUTDOWN_WAIT)
        # What the screen had not shown yet still belongs in the transcript: the buffered
        # deltas, then the frames posted but not handled, in the order they came.
        pending, _ = self.frame_buffer.take(time.monotonic())
        for pane_id, deltas in pending.items():
            for delta in deltas:
                self.recorder.frame(pane_id, delta)
        for frame in self.inbox.drain():
            for pane_id, delta in frame.deltas.items():
                self.recorder.frame(pane_id, delta)
        self.recorder.save_states(self.source.snapshot)
        if stopped:
            self.source.close()  # the models it loaded (the default one is the caller's)
        self.gc_policy.restore()
