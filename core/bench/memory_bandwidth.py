"""How fast this machine reads memory: the roof of a decode step that reads every weight once.

A decode step of a 1-8B model reads all its weights (about their file size) and does little
arithmetic on each byte, so its speed is bounded by read bandwidth: tokens per second at one
sequence can reach at most bandwidth ÷ bytes per step (the roofline the bench prints)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

#: Bytes to read: far beyond any cache, so the figure is main memory's.
BUFFER_BYTES = 1 << 30


def read_bandwidth(threads: int, repeats: int = 3, size: int = BUFFER_BYTES) -> float:
    """Bytes per second ``threads`` threads read together (each sums its share of a buffer;
    numpy drops the GIL while it sums); the best of ``repeats``."""
    import numpy as np

    buffer = np.ones(size // 8, dtype=np.float64)
    shares = np.array_split(buffer, max(threads, 1))
    best = 0.0
    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(np.sum, shares))
            seconds = time.perf_counter() - started
            best = max(best, buffer.nbytes / seconds)
    return best
