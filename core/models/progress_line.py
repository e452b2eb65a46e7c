"""A model load's progress on stderr, for the command lines (``python -m core``, ``panechat``
before its screen is up): "loading model.gguf 42%".

On a terminal it is one line, redrawn at each whole percent. Anywhere else (a log file, a
pipe) it says nothing for a load done within :data:`LOG_AFTER` seconds, as most small models'
are, so that a log or a script reading the one line of an error is not cluttered; a slower
load gets a line every tenth from then on. Only stderr: stdout stays the program's own output
(``--show-prompt`` is piped into other tools)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

#: Percent between two lines where the stream is not a terminal.
LOG_STEP = 10
#: Seconds a load runs before a stream that is not a terminal is told about it.
LOG_AFTER = 2.0


class ProgressLine:
    """Shows ``label`` and a percentage; use as a ``with`` block around the load (it ends the
    line, finished or not, so that what follows starts on a line of its own). Call it with
    fractions (a :data:`~core.models.load_progress.ProgressObserver`)."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.redraws = _is_terminal(self.stream)
        self.step = 1 if self.redraws else LOG_STEP
        self._clock = clock
        self._quiet_until = clock() + (0.0 if self.redraws else LOG_AFTER)
        self._shown = -1  # the last percent written
        self._open = False  # a redrawn line is on screen without its newline

    def __call__(self, fraction: float) -> None:
        percent = max(0, min(100, int(fraction * 100)))
        percent -= percent % self.step
        if percent <= self._shown or self._clock() < self._quiet_until:
            return
        self._shown = percent
        try:
            if self.redraws:
                self.stream.write(f"\r{self.label} {percent}%")
                self._open = percent < 100
                if not self._open:
                    self.stream.write("\n")
            else:
                self.stream.write(f"{self.label} {percent}%\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the load
            self._open = False

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._open:
            self._open = False
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False
