"""The engine's frames on their way to the panes: folded between screen updates
(FrameBuffer), then applied to every pane in one update. (The session recorder subscribes to
the decode loop itself.)"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from textual.timer import Timer

from core.chat import EngineEvent, FrameStats
from tui.frame_buffer import MIN_TIMER_DELAY, FrameBuffer
from tui.messages import FrameUpdate, message_for

if TYPE_CHECKING:
    from tui.app import PanechatApp


class FrameDispatch:
    """Receives the engine's events (in its thread) and applies its frames (in the app's)."""

    def __init__(self, app: PanechatApp, update_interval: float) -> None:
        self.app = app
        self.buffer = FrameBuffer(update_interval)
        self.seen: list[FrameUpdate] = []  # the last few, for tests and the bench
        self.model_stats: dict[str, FrameStats] = {}  # each model's last figures ("": default)
        self._flush_timer: Timer | None = None

    def receive(self, event: EngineEvent) -> None:
        """The engine's callback, in the engine's thread: wake the app with the event
        (``post_message`` is thread-safe)."""
        self.app.post_message(message_for(event))

    def update(self, event: FrameUpdate) -> None:
        self.seen = [*self.seen[-63:], event]
        # Each model's frames carry its own figures; the buffer paces updates by the panes
        # generating on every model.
        if event.stats.decoded:
            self.model_stats[event.model] = event.stats
        generating = sum(s.generating for s in self.model_stats.values())
        stats = replace(self.model_stats.get("", event.stats), generating=generating)
        now = time.monotonic()
        due = self.buffer.add(event.deltas, stats, now)
        if due is None:
            return  # an update is already due no later
        if self._flush_timer is not None:
            self._flush_timer.stop()
        self._schedule_flush(due - now)

    def _schedule_flush(self, delay: float) -> None:
        """Flush after ``delay``, or at once where a timer might never fire."""
        if delay < MIN_TIMER_DELAY:
            self._flush_timer = None
            self.app.call_later(self.flush)
        else:
            self._flush_timer = self.app.set_timer(delay, self.flush)

    async def flush(self) -> None:
        """Apply every buffered frame: one screen update for all of them."""
        now = time.monotonic()
        hold = self.buffer.hold(now)
        if hold:
            self._schedule_flush(hold)  # the key goes first
            return
        self._flush_timer = None
        pending, stats = self.buffer.take(now)
        panes = self.app.pane_row.by_id()
        with self.app.batch_update():
            for pane_id, deltas in pending.items():
                pane = panes.get(pane_id)
                if pane is None:
                    continue
                for delta in deltas:
                    if delta.model is not None:  # it answers with another model now
                        model = delta.model
                        label = self.app.pane_actions.model_label(model)
                        size = self.app.config.context_size(model)
                        pane.answer_with(model, label, size)
                    await pane.apply(delta)
            if stats is not None and self.app.status_bar.is_attached:  # not once shutting down
                self.show_stats()
        if self.app.status_bar.is_attached:
            # The batch held the screen's update back, and ending it wakes only the app:
            # without this, what was applied can wait for some other widget to repaint.
            self.app.screen.check_idle()

    def show_stats(self) -> None:
        """The status bar: the default model's figures, then each other model's in use."""
        used = {self.app.config.model_key(p.config.model) for p in self.app.panes}
        self.model_stats = {m: s for m, s in self.model_stats.items() if not m or m in used}
        self.app.status_bar.stats = self.model_stats.get("", FrameStats())
        self.app.status_bar.others = tuple(
            (self.app.pane_actions.model_label(m), s) for m, s in self.model_stats.items() if m
        )

    def key_pressed(self) -> None:
        """A key goes first: the next screen update waits a moment for its echo."""
        self.buffer.key_pressed(time.monotonic())

    def drop(self, pane_id: str) -> None:
        """A pane cleared or closed: its buffered frames are not drawn."""
        self.buffer.drop(pane_id)
