"""What keeps the UI cheap while panes stream: the GC policy and the decode thread's priority."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from core import BatchedExecutor, ContextParams, LlamaWeights, model_template
from core.chat import ChatEngine, ChatEngineGroup
from core.executor.thread_priority import lower_this_thread
from tui.gc_policy import OLDEST_EVERY, GcPolicy


@pytest.fixture
def clean_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)
    gc.unfreeze()


def test_gc_policy_freezes_and_restores(clean_gc: None) -> None:
    before = gc.get_threshold()
    policy = GcPolicy()
    policy.apply()
    assert policy.applied
    assert gc.get_freeze_count() > 0  # the heap as it is now is never scanned again
    assert gc.get_threshold() == (before[0], before[1], OLDEST_EVERY)
    policy.apply()  # twice is once
    policy.restore()
    assert not policy.applied
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    policy.restore()  # and restoring twice is harmless


def nice_of(thread_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread_id)


@pytest.mark.skipif(sys.platform != "linux", reason="nice values are per thread on Linux only")
def test_lowering_a_thread_leaves_the_others_alone() -> None:
    seen: dict[str, int] = {}

    def worker() -> None:
        seen["lowered"] = lower_this_thread(3)
        seen["nice"] = nice_of(threading.get_native_id())

    base = nice_of(threading.get_native_id())
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"lowered": True, "nice": min(19, base + 3)}
    assert nice_of(threading.get_native_id()) == base
    assert lower_this_thread(0) is False


@pytest.mark.skipif(sys.platform != "linux", reason="nice values are per thread on Linux only")
def test_llama_cpp_threads_inherit_the_decode_threads_priority(weights: LlamaWeights) -> None:
    """The OpenMP workers start at the first decode, from the decode thread, so they run at
    its priority too; the UI thread keeps its own."""
    executor = BatchedExecutor(weights, ContextParams(n_ctx=512, n_batch=64, n_threads=2))
    loop = ChatEngineGroup(ChatEngine(executor, model_template(weights)), lambda m: None, nice=5)
    base = nice_of(threading.get_native_id())
    before = set(os.listdir("/proc/self/task"))
    try:
        loop.start()
        deadline = time.monotonic() + 120  # one small decode: far less, even on a busy machine
        while executor.stats.tokens_decoded == 0:
            assert time.monotonic() < deadline, "the decode thread never decoded"
            time.sleep(0.05)  # warm_up() decodes once
        decode_thread = loop.thread_id
        assert decode_thread is not None and nice_of(decode_thread) == min(19, base + 5)
        started = {int(t) for t in set(os.listdir("/proc/self/task")) - before}
        assert started - {decode_thread}, "llama.cpp started no worker thread"
        assert all(nice_of(t) == min(19, base + 5) for t in started)
        assert nice_of(threading.get_native_id()) == base
    finally:
        loop.shutdown()
        executor.close()
