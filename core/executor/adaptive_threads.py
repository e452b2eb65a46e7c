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
configured. The measuring (:class:`ProcStatLoad`) and the deciding (:func:`threads_left`) are
apart, so tests drive the decisions with load they script instead of the machine's own.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


class OutsideLoad(Protocol):
    """Where the thread count learns how much CPU other processes take: /proc/stat by
    default (:class:`ProcStatLoad`); a test scripts it, so it controls the load it tests."""

    def measure(self) -> float | None:
        """Cores other processes kept busy lately, when a fresh figure is due; None while
        none is due or none can be read (the count then stays as it is)."""
        ...


class ProcStatLoad:
    """Other processes' CPU use, measured: every process's CPU time on our cores (from
    /proc/stat) less our own, over at least ``INTERVAL_SECONDS``."""

    def __init__(
        self,
        cores: frozenset[int],
        first: CpuTimes,
        read: Callable[[frozenset[int]], CpuTimes | None] = CpuTimes.read,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``read`` and ``clock`` are for tests of the measuring itself."""
        self._cores = cores
        self._last = first
        self._read = read
        self._clock = clock

    @classmethod
    def start(cls, cores: frozenset[int]) -> ProcStatLoad | None:
        """Measuring from now, or None where /proc/stat cannot be read (not Linux)."""
        first = CpuTimes.read(cores)
        return cls(cores, first) if first is not None else None

    def measure(self) -> float | None:
        if self._clock() - self._last.at < INTERVAL_SECONDS:
            return None
        now = self._read(self._cores)
        if now is None:
            return None
        others = now.others_since(self._last)
        self._last = now
        return others


def threads_left(configured: int, cores: int, others: float) -> int:
    """The threads to decode with while other processes keep ``others`` of our ``cores``
    busy: the configured count, less the cores they take beyond those it leaves free anyway
    (0.6 of a core counts as a whole one), and at least one."""
    taken = math.floor(others + (1.0 - GIVE_UP_AT) + 1e-9)
    spare = max(0, cores - configured)  # cores we do not use anyway
    return max(1, configured - max(0, taken - spare))


class AdaptiveThreads:
    """Decides how many threads the next decode uses: :func:`threads_left` of the load that
    ``OutsideLoad`` last measured."""

    def __init__(
        self,
        configured: int,
        *,
        enabled: bool = True,
        cores: frozenset[int] | None = None,
        load: OutsideLoad | None = None,
    ) -> None:
        """By default, ``cores`` is our affinity and ``load`` is measured from /proc/stat;
        tests pass both, to decide what the machine looks like."""
        self._configured = configured
        self._current = configured
        self._others = 0.0
        self._cores = cores if cores is not None else _affinity()
        self._load: OutsideLoad | None = None
        if enabled and configured > 1 and self._cores:
            self._load = load if load is not None else ProcStatLoad.start(self._cores)

    @property
    def current(self) -> int:
        return self._current

    @property
    def others(self) -> float:
        """Cores other processes used in the last measured interval."""
        return self._others

    def observe(self) -> None:
        """Take a fresh figure of the load, if one is due. Decoding does this before each
        decode; an idle decode loop calls it now and then, so the first decode after a pause
        decides on fresh data."""
        if self._load is None:
            return
        others = self._load.measure()
        if others is not None:
            self._others = others

    def update(self) -> int | None:
        """The new thread count if it should change now, else None. Call before a decode."""
        self.observe()
        if self._load is None or not self._cores:
            return None
        target = threads_left(self._configured, len(self._cores), self._others)
        if target == self._current:
            return None
        self._current = target
        return target


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return None
