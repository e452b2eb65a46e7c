"""Facts about the machine we run on that llama.cpp does not report: the CPU's name and the
cores this process may use. Read from the OS only; never loads llama.cpp."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's marketing name ("AMD EPYC 9B14", "Intel(R) Xeon(R) Platinum 8481C"), or the
    platform's processor string where /proc/cpuinfo has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cores_available() -> int:
    """Cores this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)
