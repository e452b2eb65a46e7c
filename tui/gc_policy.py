"""Python's cyclic garbage collector, tuned for an app that streams text into many widgets.

A full collection walks every live object. A running app holds a few hundred thousand of
them, most in Textual's render caches, so one full collection takes 50-150 ms on the UI
thread. The screen stalls for that long, and on a small machine the CPU comes out of
llama.cpp's threads. In the app bench (8 panes, 2 cores), full collections took about 12% of a
core, and the app streamed ~118 tok/s without this policy and ~141 tok/s with it.

The policy does two things, as long-running Python services do (Textual pauses the collector
for the same reason while it scrolls, ``App.PAUSE_GC_ON_SCROLL``):
- it freezes what exists once the app is up (modules, the model's metadata, the first widget
  tree), so no collection scans those objects again;
- it runs the oldest generation ten times less often.
The young generations keep CPython's thresholds, so short-lived cycles are still collected
promptly.
"""

from __future__ import annotations

import gc

#: Collections of the middle generation per collection of the oldest (CPython's default: 10).
OLDEST_EVERY = 100


class GcPolicy:
    """Applied once the app is up and undone when it exits. The collector's settings are
    process-wide, so an app run in the same process as others (tests, the bench) must not
    leave them changed."""

    def __init__(self, oldest_every: int = OLDEST_EVERY) -> None:
        self.oldest_every = oldest_every
        self._saved: tuple[int, int, int] | None = None

    @property
    def applied(self) -> bool:
        return self._saved is not None

    def apply(self) -> None:
        if self._saved is not None:
            return
        self._saved = gc.get_threshold()
        gc.collect()  # garbage is freed now, not frozen with the rest
        gc.freeze()
        young, middle, _ = self._saved
        gc.set_threshold(young, middle, self.oldest_every)

    def restore(self) -> None:
        if self._saved is None:
            return
        gc.set_threshold(*self._saved)
        gc.unfreeze()
        self._saved = None
