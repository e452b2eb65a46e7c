"""Engine frames gathered between screen updates, and when the next update is due.

Every screen update re-lays out every pane whose text grew, and that work takes CPU from
llama.cpp's threads (on 2 cores, a UI thread busy 30% of the time costs ~20% of the decode
speed). So frames are folded together and shown at an interval that grows with the number of
streaming panes, from ``MIN_UPDATE_INTERVAL`` up to ``[ui] update_interval`` at
``FULL_INTERVAL_PANES``; when the last reply ends, its end is due at once; and right after a
key press streamed text waits a moment, so the key is not queued behind a re-layout
(docs/BENCHMARKS.md). Timing only: no Textual here; the app owns the timer.
"""

from __future__ import annotations

from dataclasses import replace

from core.chat import ChatDelta, FrameStats

MIN_UPDATE_INTERVAL = 1 / 15
FULL_INTERVAL_PANES = 8
#: After a key press, streamed text waits this long, so the screen update that shows the key
#: is not queued behind a re-layout of every pane.
INPUT_FIRST = 0.06
#: A Textual timer with a shorter delay may find its time passed and never fire.
MIN_TIMER_DELAY = 0.005


class FrameBuffer:
    def __init__(self, update_interval: float) -> None:
        self.update_interval = update_interval  # [ui] update_interval: with 8 panes streaming
        self._deltas: dict[str, list[ChatDelta]] = {}
        self._stats: FrameStats | None = None
        self.due_at: float | None = None  # when the scheduled update runs, if one is
        self.last_update = 0.0  # when the last update took the buffered frames
        self._last_key = 0.0

    def interval(self, streaming: int) -> float:
        """Seconds between updates with ``streaming`` panes streaming."""
        full = self.update_interval
        return min(max(MIN_UPDATE_INTERVAL, full * streaming / FULL_INTERVAL_PANES), full)

    def add(self, deltas: dict[str, ChatDelta], stats: FrameStats, now: float) -> float | None:
        """Fold one frame in; return when the update should run if that is sooner than the
        one already scheduled (the caller then reschedules), else None."""
        for pane_id, delta in deltas.items():
            queue = self._deltas.setdefault(pane_id, [])
            if not queue or not queue[-1].absorb(delta):
                queue.append(replace(delta))
        self._stats = stats
        if stats.generating == 0:
            due = now  # the last reply has ended: nothing more is coming, show it at once
        else:
            due = max(now, self.last_update + self.interval(stats.generating))
        if self.due_at is not None and self.due_at <= due:
            return None  # already due no later
        self.due_at = due
        return due

    def drop(self, pane_id: str) -> None:
        """Forget a pane's buffered deltas (it was cleared or closed)."""
        self._deltas.pop(pane_id, None)

    def key_pressed(self, now: float) -> None:
        self._last_key = now

    def hold(self, now: float) -> float:
        """Seconds the due update should wait for a key press to be shown first (0: none)."""
        wait = self._last_key + INPUT_FIRST - now
        late = self.due_at is not None and now - self.due_at >= self.update_interval
        return wait if wait >= MIN_TIMER_DELAY and self.due_at is not None and not late else 0.0

    def take(self, now: float) -> tuple[dict[str, list[ChatDelta]], FrameStats | None]:
        """Everything buffered since the last update, and the latest figures."""
        deltas, stats = self._deltas, self._stats
        self._deltas, self._stats = {}, None
        self.due_at, self.last_update = None, now
        return deltas, stats
