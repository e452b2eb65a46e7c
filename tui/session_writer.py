"""The session recorder on a thread of its own. It subscribes to the decode loop's frames
itself (nothing in the app relays them) and writes through its own connection to the store, so
no write waits for a screen update and no frame waits for a write. The app tells it only what
the engine does not know: which panes the session has."""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from core import PanechatError
from core.chat import ChatConfig, EngineEvent, Frame
from core.errors import one_line
from tui.session_recorder import NullRecorder, Recorder, SessionRecorder, Snapshot
from tui.session_store import SavedPane, SessionStore

#: One thing for the writer's thread to do with the recorder (None: stop).
_Task = Callable[[Recorder], None]
#: Seconds a search waits for the writer to say which pane holds a message.
ASK_WAIT = 10.0


class SessionWriter:
    """Records one session in its own thread (from :meth:`start`), in the order things
    happened: the panes the app opens and closes, and every frame of the decode loop
    (:meth:`receive` is the loop's subscription, called in its thread). A store that cannot
    be opened there records nothing, and ``on_error`` says so (as a write that fails does;
    from that thread)."""

    def __init__(
        self, path: Path, session_id: int, on_error: Callable[[str], None] = lambda m: None
    ) -> None:
        self.path = path
        self.session_id = session_id
        self._on_error = on_error
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="panechat-save", daemon=True)

    def start(self) -> None:
        """Open the store and write what comes (an app that never runs starts no thread)."""
        self._thread.start()

    def receive(self, event: EngineEvent) -> None:
        """A frame of the decode loop (in its thread), to be written."""
        if isinstance(event, Frame):
            self._tasks.put(lambda recorder: recorder.record(event))

    def pane_opened(self, pane_id: str, config: ChatConfig, branched_from: str) -> None:
        self._tasks.put(lambda recorder: recorder.pane_opened(pane_id, config, branched_from))

    def pane_restored(self, pane_id: str, saved: SavedPane) -> None:
        self._tasks.put(lambda recorder: recorder.pane_restored(pane_id, saved))

    def pane_closed(self, pane_id: str) -> None:
        self._tasks.put(lambda recorder: recorder.pane_closed(pane_id))

    def message_at(self, row: int) -> tuple[str, int] | None:
        """As :meth:`SessionRecorder.message_at`, once what is queued is written."""
        if not self._thread.is_alive():
            return None
        answer: Future[tuple[str, int] | None] = Future()

        def ask(recorder: Recorder) -> None:
            try:
                answer.set_result(recorder.message_at(row))
            except Exception as e:
                answer.set_exception(e)

        self._tasks.put(ask)
        try:
            return answer.result(ASK_WAIT)
        except Exception:  # not answered in time, or the store failed: no pane to show
            return None

    def save_states(self, snapshot: Snapshot) -> None:
        """On quit: write what is queued, then every pane's decode state; returns once all is
        written (the writer's thread ends)."""
        if not self._thread.is_alive():
            return  # never started (the app did not run), or already done
        self._tasks.put(lambda recorder: recorder.save_states(snapshot))
        self._tasks.put(None)
        self._thread.join()

    def _run(self) -> None:
        recorder: Recorder = NullRecorder()
        store: SessionStore | None = None
        try:
            store = SessionStore(self.path)
        except (sqlite3.Error, OSError, PanechatError) as e:
            self._on_error(f"could not save to {self.path} ({e}); this session is not saved")
        else:
            recorder = SessionRecorder(store, self.session_id, self._on_error)
        try:
            while (task := self._tasks.get()) is not None:
                try:
                    task(recorder)
                except Exception as e:  # a bug here must not lose the rest of the session
                    self._on_error(f"could not save a change ({one_line(e)})")
        finally:
            if store is not None:
                store.close()
