"""The panechat app: side-by-side chat panes served by one shared decode loop."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar, Protocol

from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.driver import Driver
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import TextArea

from core.chat import (
    ChatSnapshot,
    EngineEvent,
    GroupCommand,
    ModelLoading,
)
from core.text.printable import printable
from tui.bindings import APP_BINDINGS, KeyNames
from tui.config import AppConfig, save_theme_choice
from tui.frame_dispatch import FrameDispatch
from tui.gc_policy import GcPolicy
from tui.messages import (
    DecodeStopped,
    EngineFailed,
    FrameUpdate,
    ModelLoadProgress,
    SaveFailed,
)
from tui.open_session import OpenSession
from tui.palette import palette_commands
from tui.pane_actions import PaneActions
from tui.screens.help_screen import HelpScreen
from tui.session_actions import SessionActions
from tui.session_recorder import NullRecorder
from tui.session_store import SavedPane, SessionStore
from tui.session_writer import SessionWriter
from tui.themes import load_themes
from tui.widgets.chat_pane import ChatPane
from tui.widgets.fitting_footer import FittingFooter
from tui.widgets.pane_row import PaneRow
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
    def subscribe(self, listener: Callable[[EngineEvent], object]) -> None: ...


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
        self.recorder: SessionWriter | NullRecorder = (
            SessionWriter(store.path, self.session_id, self._save_failed)
            if store is not None and self.session_id is not None
            else NullRecorder()
        )
        self.config = config
        self.source = source
        source.subscribe(self.recorder.receive)  # it records the frames itself
        self.model_name = model_name
        self.backend = backend
        self.initial_panes = config.opening_panes(panes)
        self.persist_theme = persist_theme
        self.saved_theme = config.theme  # what the user config file says
        self.quitting = False  # a quit is under way (the decode thread is being stopped)
        self.hurry = False  # a second quit came: exit without waiting for the decode thread
        self.keys = KeyNames(config.keys)
        self.loading_models: dict[str, str] = {}  # models loading for panes: their progress
        self.frames = FrameDispatch(self, config.update_interval)
        self.pane_actions = PaneActions(self)
        self.session_actions = SessionActions(self)
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
        """What could not be saved (in the recorder's thread): told now, and after quit."""
        self.save_failures.append(message)
        self.post_message(SaveFailed(message))

    def on_save_failed(self, event: SaveFailed) -> None:
        self.notify(event.message, severity="error", timeout=15)

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
        failures = list(self.save_failures)  # before the writer starts (it tells its own)
        self.recorder.start()
        if self.config.keys:
            self.set_keymap(self.config.keys)
        self.theme = self.config.theme
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        if self.restore:
            revealing = await self.session_actions.resume(self.restore, self.reveal)
        else:
            for pane_config in self.initial_panes:
                await self.pane_actions.add_pane(pane_config)
        self.source.start()
        self.panes[0].input.focus()
        if self.restore and self.reveal is not None:
            await self.session_actions.reveal(revealing, self.reveal)
        for failure in failures:  # before the first pane opened
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

    # -- the engine's frames and the panes' turns ------------------------------------------

    def receive(self, event: EngineEvent) -> None:
        """The engine's callback, in the engine's thread (see FrameDispatch.receive)."""
        self.frames.receive(event)

    def on_frame_update(self, event: FrameUpdate) -> None:
        self.frames.update(event)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.frames.key_pressed()
        await super().on_event(event)

    async def on_chat_pane_sent(self, event: ChatPane.Sent) -> None:
        await self.pane_actions.send_to(event.pane, event.text)

    async def send_to(self, pane: ChatPane, text: str) -> None:
        """Send what was typed in ``pane`` (a turn, or a new version of the message edited)."""
        await self.pane_actions.send_to(pane, text)

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

    # -- actions: the keys' (tui/pane_actions.py, tui/session_actions.py) ------------------

    def action_focus_pane(self, step: int) -> None:
        self.pane_actions.focus_pane(step)

    async def action_new_pane(self) -> None:
        await self.pane_actions.new_pane()

    async def action_close_pane(self) -> None:
        await self.pane_actions.close_pane()

    def action_stop(self) -> None:
        self.pane_actions.stop()

    def action_stop_all(self) -> None:
        self.pane_actions.stop_all()

    def action_broadcast(self) -> None:
        self.pane_actions.broadcast()

    def action_toggle_maximize(self) -> None:
        self.pane_actions.toggle_maximize()

    async def action_clear_pane(self) -> None:
        await self.pane_actions.clear_pane()

    def action_copy_reply(self) -> None:
        self.pane_actions.copy_reply()

    def action_toggle_broadcast_set(self) -> None:
        self.pane_actions.toggle_broadcast_set()

    def action_compare(self) -> None:
        self.pane_actions.compare()

    async def action_fork_pane(self, greedy: bool = False) -> None:
        await self.pane_actions.fork_pane(greedy)

    def action_regenerate(self) -> None:
        self.pane_actions.regenerate()

    def action_select_message(self, step: int) -> None:
        self.pane_actions.select_message(step)

    def action_edit_message(self) -> None:
        self.pane_actions.edit_message()

    async def action_page_branch(self, step: int) -> None:
        await self.pane_actions.page_branch(step)

    def action_branches(self) -> None:
        self.pane_actions.branches()

    def action_tokens(self) -> None:
        self.pane_actions.tokens()

    def action_export_pane(self) -> None:
        self.session_actions.export_pane()

    def action_export_branches(self) -> None:
        self.session_actions.export_branches()

    def action_export_session(self, reasoning: bool = False) -> None:
        self.session_actions.export_session(reasoning=reasoning)

    def action_sessions(self) -> None:
        self.session_actions.sessions()

    def action_search(self) -> None:
        self.session_actions.search()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.keys.help_rows()))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)

    # -- quitting ------------------------------------------------------------------------

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
        self.recorder.save_states(self.source.snapshot)  # once it has every frame written
        if stopped:
            self.source.close()  # the models it loaded (the default one is the caller's)
        self.gc_policy.restore()
