"""Stop strings that may straddle token boundaries, without showing their first half."""

from __future__ import annotations

from collections.abc import Iterable


class StopStringMatcher:
    """Holds back the tail of the stream that could still grow into a stop string.

    ``feed`` returns the text that is safe to show. Once a stop string appears, the text before
    it is returned and ``stopped`` turns true; everything after it is dropped.
    """

    __slots__ = ("_held", "_longest", "_stops", "stopped")

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    @property
    def pending(self) -> bool:
        """Text is held back (it may be the start of a stop string)."""
        return bool(self._held)

    def flush(self) -> str:
        """End of stream: the held-back tail was not a stop string after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop string."""
        for length in range(min(self._longest - 1, len(buffer)), 0, -1):
            tail = buffer[-length:]
            if any(s.startswith(tail) for s in self._stops):
                return length
        return 0
