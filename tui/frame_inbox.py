"""Frames on their way from the engine's thread to the app, kept until the app has taken
them: on quit, the ones still waiting go to the recorder, so that a reply which ended in the
last moments is saved with the KV cells that hold it."""

from __future__ import annotations

from collections import deque

from core.chat import Frame


class FrameInbox:
    """FIFO of frames posted to the app and not handled yet (``deque`` appends and pops are
    atomic, so the engine's thread may put while the app's takes)."""

    def __init__(self) -> None:
        self._frames: deque[Frame] = deque()

    def put(self, frame: Frame) -> None:
        """From the engine's thread, before the frame's message is posted."""
        self._frames.append(frame)

    def take(self) -> Frame | None:
        """The oldest frame (the one whose message the app is handling)."""
        return self._frames.popleft() if self._frames else None

    def drain(self) -> list[Frame]:
        """Every frame left, oldest first (once the engine has stopped)."""
        frames = list(self._frames)
        self._frames.clear()
        return frames
