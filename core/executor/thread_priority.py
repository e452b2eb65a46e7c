"""Running the decode thread below the UI thread, so key presses are not kept waiting.

llama.cpp keeps every core busy while panes stream. When the UI thread wakes for a key
press, the scheduler gives it an equal share with llama.cpp's threads, and the key waits behind
them. In the app bench (8 panes, 2 cores), key-to-screen p95 was ~75 ms; with the decode threads
at nice 10 it was ~48 ms. Throughput hardly changes: the UI takes the CPU it would have got
anyway, just sooner. When nothing else wants the CPU, a nice value changes nothing.

The OpenMP workers that llama.cpp starts from the decode thread inherit its nice value, so the
thread must lower its priority before its first decode. A thread cannot raise its priority
again without privileges, so this is only for a thread that does nothing but decode.
"""

from __future__ import annotations

import os
import sys
import threading

MAX_NICE = 19


def lower_this_thread(steps: int) -> bool:
    """Make the calling thread ``steps`` nicer; False where that is not possible.
    Linux only: there, nice values are per thread. Elsewhere, ``setpriority`` on a thread id
    would act on the whole process, UI included."""
    if steps <= 0 or sys.platform != "linux":
        return False
    thread_id = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(MAX_NICE, current + steps))
    except OSError:
        return False
    return True
