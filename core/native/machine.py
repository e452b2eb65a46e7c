"""Facts about the machine we run on that llama.cpp does not report: the CPU's name and flags,
the cores this process may use, installed package versions. Read from the OS and the package
metadata only; never loads llama.cpp."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in /proc/cpuinfo (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's marketing name ("AMD EPYC 9B14", "Intel(R) Xeon(R) Platinum 8481C"), or the
    platform's processor string where /proc/cpuinfo has none."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> frozenset[str]:
    """The CPU flags the kernel reports ("avx2", "amx_tile", …); empty where it reports none."""
    return frozenset((_cpuinfo("flags") or "").split())


def cores_available() -> int:
    """Cores this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def distribution_version(name: str) -> str:
    """An installed package's version, or "not installed"."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
