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

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: How long CPU use is measured before the thread count is decided again.
INTERVAL_SECONDS = 0.5
#: Cores others must take before we give one up: a busy loop under contention takes ~0.67
#: core of 2; a shell or an idle browser takes a few percent.
GIVE_UP_AT = 0.6
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds spent so far: by every process on our cores, and by this process."""

    at: float  # time.monotonic()
    all_busy: float
    ours: float

    @classmethod
    def read(cls, cores: frozenset[int]) -> CpuTimes | None:
        """Now, or None where /proc/stat cannot be read."""
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
                continue
            # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
            fields = [int(v) for v in rest.split()[:8]]
            busy += sum(fields) - fields[3] - fields[4]
        mine = os.times()
        return cls(time.monotonic(), busy / _TICKS, mine.user + mine.system)


class AdaptiveThreads:
    """Decides how many threads the next decode uses: the configured count, less the cores
    other processes keep busy."""

    def __init__(self, configured: int, *, enabled: bool = True) -> None:
        self.configured = configured
        self.current = configured
        self.others = 0.0  # cores other processes used in the last interval
        self._cores = _affinity()
        self._enabled = enabled and configured > 1 and self._cores is not None
        self._last = CpuTimes.read(self._cores) if self._enabled and self._cores else None

    def observe(self) -> None:
        """Measure the CPU other processes took since the last measurement, if that was at
        least ``INTERVAL_SECONDS`` ago. Decoding does this before each decode; an idle decode
        loop calls it now and then, so the first decode after a pause decides on fresh data."""
        if not self._enabled or self._last is None or self._cores is None:
            return
        if time.monotonic() - self._last.at < INTERVAL_SECONDS:
            return
        now = CpuTimes.read(self._cores)
        if now is None:
            return
        wall = now.at - self._last.at
        taken = (now.all_busy - self._last.all_busy) - (now.ours - self._last.ours)
        self.others = max(0.0, taken / wall)
        self._last = now

    def update(self) -> int | None:
        """The new thread count if it should change now, else None. Call before a decode."""
        self.observe()
        if not self._enabled or self._cores is None:
            return None
        taken = int(self.others + (1.0 - GIVE_UP_AT))  # 0.6 core or more counts as one
        target = max(1, min(self.configured, len(self._cores) - taken))
        if target == self.current:
            return None
        self.current = target
        return target


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return None
