"""The thread count gives way to a busy process and comes back when it stops (real decode)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import pytest

from core import BatchedExecutor, ContextParams, InvalidParamsError, SamplingParams
from core.adaptive_threads import TICKS_PER_SECOND, AdaptiveThreads, CpuTimes
from core.bench.busy import competing_process
from core.machine import cores_available

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or cores_available() < 2, reason="needs Linux and 2 cores or more"
)


def decode_for(executor: BatchedExecutor, seconds: float) -> None:
    """Stream one greedy conversation for a while (the count is decided before decodes)."""
    conv = executor.create(SamplingParams(temperature=0.0))
    conv.prompt("Count to a thousand: one, two,")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            assert executor.infer_sync().ok
            conv.prompt([conv.sample()])
            if conv.token_count > 200:
                conv.rewind(150)
    finally:
        conv.dispose()


def wait_until(check: Callable[[], bool], executor: BatchedExecutor, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        decode_for(executor, 0.3)
        if check():
            return True
    return False


def stat(*busy_ticks: int, idle: int = 0) -> str:
    """/proc/stat text: one line per CPU with these busy ticks (user) and idle ticks."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
    lines += [f"cpu{i} {b} 0 0 {idle} 0 0 0 0 0 0" for i, b in enumerate(busy_ticks)]
    return "\n".join([*lines, "intr 1 2 3", "ctxt 99"])


def reading(at: float, ours: float, *busy_ticks: int) -> CpuTimes:
    cores = frozenset(range(len(busy_ticks)))
    found = CpuTimes.parse(stat(*busy_ticks), cores, at, ours)
    assert found is not None
    return found


def test_the_count_follows_the_cores_others_take() -> None:
    hz = TICKS_PER_SECOND
    tuner = AdaptiveThreads(2, cores=frozenset({0, 1}), start=reading(0.0, 0.0, 0, 0))
    # 1 s: we used 1.3 cores, the machine 2: others took 0.7 -> give one up.
    assert tuner.update(reading(1.0, 1.3, hz, hz)) == 1 and tuner.current == 1
    assert abs(tuner.others - 0.7) < 1e-9
    # Others keep a whole core: stay at 1 (no change to report).
    assert tuner.update(reading(2.0, 2.3, 2 * hz, 2 * hz)) is None
    # They stop: we used 1 core of the 1 busy -> back to 2.
    assert tuner.update(reading(3.0, 3.3, 3 * hz, 2 * hz)) == 2
    # A little background load (0.3 core) keeps every thread.
    assert tuner.update(reading(4.0, 5.3, 4 * hz, 3 * hz + hz * 3 // 10)) is None
    assert abs(tuner.others - 0.3) < 1e-9


def test_cores_the_configured_count_leaves_free_absorb_others_load() -> None:
    hz = TICKS_PER_SECOND
    cores = frozenset(range(4))
    tuner = AdaptiveThreads(2, cores=cores, start=reading(0.0, 0.0, 0, 0, 0, 0))
    # Another process takes 1 of 4 cores; we use 2: nothing to give up.
    assert tuner.update(reading(1.0, 2.0, hz, hz, hz, 0)) is None
    # Three cores' worth taken by others: 2 spare cores absorb two, we give one up.
    assert tuner.update(reading(2.0, 3.0, 2 * hz, 2 * hz, 2 * hz, hz)) == 1
    # Configured beyond our cores is left alone when nothing competes.
    assert (
        AdaptiveThreads(8, cores=frozenset({0, 1}), start=reading(0, 0, 0, 0)).update(
            reading(1.0, 2.0, hz, hz)
        )
        is None
    )


def test_odd_proc_stat_text_turns_adapting_off_instead_of_failing() -> None:
    cores = frozenset({0, 1})
    assert CpuTimes.parse("cpu0 1 2 x 4 5 6 7 8\n", cores, 0.0, 0.0) is None
    assert CpuTimes.parse("cpu0 1 2\n", cores, 0.0, 0.0) is None
    assert CpuTimes.parse(stat(5, 5), frozenset({7, 8}), 0.0, 0.0) is None  # none of ours
    tuner = AdaptiveThreads(2, cores=frozenset({7}))
    assert tuner.update() is None and tuner.current == 2
    # A core that went offline between readings is left out, not read as negative load.
    earlier = reading(0.0, 0.0, 0, 0)
    later = CpuTimes.parse(stat(100), frozenset({0, 1}), 1.0, 1.0)
    assert later is not None and later.others_since(earlier) == 0.0


def test_a_busy_process_takes_a_core_and_gives_it_back(
    make_executor: Callable[..., BatchedExecutor],
) -> None:
    executor = make_executor(n_ctx=512, n_seq_max=2)
    configured = executor.params.threads
    decode_for(executor, 1.2)
    if executor.cpu_taken_by_others > 0.3:
        pytest.skip(f"the machine is busy already ({executor.cpu_taken_by_others:.2f} cores)")
    assert executor.threads == configured
    with competing_process():
        assert wait_until(lambda: executor.threads < configured, executor, 8), (
            f"still {executor.threads} threads with a busy process "
            f"(others took {executor.cpu_taken_by_others:.2f} cores)"
        )
        assert executor.cpu_taken_by_others >= 0.6
        decode_for(executor, 1.0)
        assert executor.threads < configured, "the count must hold while the load holds"
    assert wait_until(lambda: executor.threads == configured, executor, 8)
    assert executor.stats.thread_changes >= 2


def test_a_fixed_thread_count_stays_fixed(make_executor: Callable[..., BatchedExecutor]) -> None:
    executor = make_executor(n_ctx=512, n_seq_max=2, adapt_threads=False)
    with competing_process():
        decode_for(executor, 1.5)
    assert executor.threads == executor.params.threads
    assert executor.stats.thread_changes == 0


def test_adapt_threads_must_be_a_bool() -> None:
    with pytest.raises(InvalidParamsError, match="adapt_threads must be true or false"):
        ContextParams(adapt_threads=1)  # type: ignore[arg-type]
