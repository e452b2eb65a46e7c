"""A llama.cpp thread count that gives way to other processes, so decoding degrades gracefully.

llama.cpp splits every operation of a decode across its threads and makes them meet at a
barrier after each one, a few hundred times per token. When another process takes one of our
cores, the thread that shares it is descheduled for a time slice at a time, and its siblings
wait at the next barrier (spinning, with OpenMP's default policy). Measured on a 2-core Intel
Xeon, 8 conversations: 180 tok/s idle, 52 tok/s with two threads beside one busy process, but
96 tok/s with one thread. Yielding instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) got
94 tok/s busy but cost 29% idle, since every barrier then sleeps in the kernel.

So we count the CPU time that other processes take on the cores we may run on (``/proc/stat``
minus our own) and decode with the cores they leave us, at least one. It is measured over
half a second (an idle decode loop keeps measuring) and decided at the next decode; when the
other process stops, our threads come back. Linux only; elsewhere the count stays as
configured.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: How long CPU use is measured before the thread count is decided again.
INTERVAL_SECONDS = 0.5
#: Cores others must take before we give one up: a busy loop under contention takes ~0.67
#: core of 2; a shell or an idle browser takes a few percent.
GIVE_UP_AT = 0.6
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds spent so far: on each of our cores by every process, and by this one."""

    at: float  # time.monotonic()
    busy: dict[int, float]  # core -> busy seconds since boot
    ours: float

    @classmethod
    def read(cls, cores: frozenset[int]) -> CpuTimes | None:
        """Now, or None where /proc/stat cannot be read or shows none of our cores."""
        try:
            text = Path("/proc/stat").read_text()
        except OSError:
            return None
        mine = os.times()
        return cls.parse(text, cores, time.monotonic(), mine.user + mine.system)

    @classmethod
    def parse(cls, text: str, cores: frozenset[int], at: float, ours: float) -> CpuTimes | None:
        busy: dict[int, float] = {}
        for line in text.splitlines():
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cores:
                continue
            try:
                # user nice system idle iowait irq softirq steal: all but idle, iowait are busy
                fields = [int(v) for v in rest.split()[:8]]
                busy[int(name[3:])] = (sum(fields) - fields[3] - fields[4]) / TICKS_PER_SECOND
            except (ValueError, IndexError):
                return None
        return cls(at, busy, ours) if busy else None

    def others_since(self, earlier: CpuTimes) -> float:
        """Cores other processes kept busy between ``earlier`` and now (cores present in both
        readings only: one that went offline or came back says nothing about load)."""
        wall = self.at - earlier.at
        if wall <= 0:
            return 0.0
        shared = self.busy.keys() & earlier.busy.keys()
        busy = sum(self.busy[c] - earlier.busy[c] for c in shared)
        return max(0.0, (busy - (self.ours - earlier.ours)) / wall)


class AdaptiveThreads:
    """Decides how many threads the next decode uses: the configured count, less the cores
    other processes keep busy (beyond cores the configured count leaves free anyway)."""

    def __init__(
        self,
        configured: int,
        *,
        enabled: bool = True,
        cores: frozenset[int] | None = None,
        start: CpuTimes | None = None,
    ) -> None:
        """``cores`` and ``start`` (the first reading) are for tests: by default, our
        affinity and /proc/stat now."""
        self._configured = configured
        self._current = configured
        self._others = 0.0
        self._cores = cores if cores is not None else _affinity()
        self._last: CpuTimes | None = None
        if enabled and configured > 1 and self._cores:
            self._last = start if start is not None else CpuTimes.read(self._cores)

    @property
    def current(self) -> int:
        return self._current

    @property
    def others(self) -> float:
        """Cores other processes used in the last measured interval."""
        return self._others

    def observe(self, now: CpuTimes | None = None) -> None:
        """Measure the CPU other processes took since the last measurement, if that was at
        least ``INTERVAL_SECONDS`` ago. Decoding does this before each decode; an idle decode
        loop calls it now and then, so the first decode after a pause decides on fresh data.
        ``now`` is for tests; by default /proc/stat is read."""
        if self._last is None or self._cores is None:
            return
        if now is None:
            if time.monotonic() - self._last.at < INTERVAL_SECONDS:
                return
            now = CpuTimes.read(self._cores)
            if now is None:
                return
        self._others = now.others_since(self._last)
        self._last = now

    def update(self, now: CpuTimes | None = None) -> int | None:
        """The new thread count if it should change now, else None. Call before a decode."""
        self.observe(now)
        if self._last is None or self._cores is None:
            return None
        taken = math.floor(self._others + (1.0 - GIVE_UP_AT) + 1e-9)  # 0.6 core counts as 1
        spare = max(0, len(self._cores) - self._configured)  # cores we do not use anyway
        target = max(1, self._configured - max(0, taken - spare))
        if target == self._current:
            return None
        self._current = target
        return target


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return None
