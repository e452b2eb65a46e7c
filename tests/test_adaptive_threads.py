"""The thread count gives way to other processes' CPU use and comes back when it ends.

The decisions are tested with load the test scripts (an ``OutsideLoad`` it sets), on a real
decode; the real /proc/stat measuring is checked for what it measures, whatever the machine's
other load happens to be: the suite runs beside other work, so no test asserts on that load.
"""

from __future__ import annotations

import sys
import time

import llama_cpp
import pytest

from core import BatchedExecutor, ContextParams, InvalidParamsError, LlamaWeights, SamplingParams
from core.bench.busy import competing_process
from core.executor.adaptive_threads import (
    INTERVAL_SECONDS,
    TICKS_PER_SECOND,
    AdaptiveThreads,
    CpuTimes,
    ProcStatLoad,
    threads_left,
)
from core.executor.conversation import Conversation
from core.native.machine import cores_available

needs_linux_and_two_cores = pytest.mark.skipif(
    sys.platform != "linux" or cores_available() < 2, reason="needs Linux and 2 cores or more"
)


class ScriptedLoad:
    """Other processes' CPU use as the test sets it: ``cores`` is what every measurement
    reports (None: no fresh figure, as between two /proc/stat intervals)."""

    def __init__(self, cores: float | None = 0.0) -> None:
        self.cores = cores
        self.measured = 0

    def measure(self) -> float | None:
        self.measured += 1
        return self.cores


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


# -- the policy, on scripted load ------------------------------------------------------------


def test_the_count_follows_the_cores_others_take() -> None:
    load = ScriptedLoad()
    tuner = AdaptiveThreads(2, cores=frozenset({0, 1}), load=load)
    assert tuner.update() is None and tuner.current == 2  # an idle machine: every thread
    load.cores = 0.7  # a busy loop beside us takes ~0.67 core of 2: give one up
    assert tuner.update() == 1 and tuner.current == 1 and tuner.others == 0.7
    load.cores = 1.0  # others keep a whole core: stay at 1 (no change to report)
    assert tuner.update() is None
    load.cores = None  # no fresh figure: the count holds
    assert tuner.update() is None and tuner.current == 1
    load.cores = 0.0  # they stop: back to 2
    assert tuner.update() == 2
    load.cores = 0.3  # a little background load (a shell, an idle browser) keeps every thread
    assert tuner.update() is None and tuner.current == 2


def test_cores_the_configured_count_leaves_free_absorb_others_load() -> None:
    assert threads_left(2, 4, 1.0) == 2  # another process takes 1 of 4 cores; we use 2
    assert threads_left(2, 4, 3.0) == 1  # 2 spare cores absorb two; we give one up
    assert threads_left(8, 2, 0.0) == 8  # configured beyond our cores: left alone when idle
    assert threads_left(4, 4, 4.0) == 1  # never fewer than one
    assert [threads_left(2, 2, x) for x in (0.59, 0.6, 1.59, 1.6)] == [2, 1, 1, 1]


def test_a_fixed_or_single_thread_count_never_measures() -> None:
    load = ScriptedLoad(cores=2.0)
    assert AdaptiveThreads(2, enabled=False, cores=frozenset({0, 1}), load=load).update() is None
    assert AdaptiveThreads(1, cores=frozenset({0, 1}), load=load).update() is None
    assert load.measured == 0


# -- measuring, on scripted /proc/stat text -----------------------------------------------------


def test_proc_stat_load_is_what_others_took_on_our_cores_per_second() -> None:
    hz = TICKS_PER_SECOND
    readings: list[CpuTimes] = []
    now = [0.0]
    load = ProcStatLoad(
        frozenset({0, 1}), reading(0.0, 0.0, 0, 0), lambda cores: readings.pop(0), lambda: now[0]
    )
    now[0] = INTERVAL_SECONDS / 2
    assert load.measure() is None  # too soon to say: /proc/stat is not read
    now[0] = 1.0
    readings.append(reading(1.0, 1.3, hz, hz))  # 2 cores busy for 1 s, 1.3 of them ours
    assert load.measure() == pytest.approx(0.7)
    now[0] = 2.0
    readings.append(reading(2.0, 2.3, 2 * hz, 2 * hz))  # others kept a whole core
    assert load.measure() == pytest.approx(1.0)
    now[0] = 3.0
    readings.append(reading(3.0, 3.3, 3 * hz, 2 * hz))  # we used the only busy core
    assert load.measure() == pytest.approx(0.0)


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
    # A reading that fails later leaves the figure as it was.
    load = ProcStatLoad(frozenset({0, 1}), earlier, lambda cores: None, lambda: 10.0)
    assert load.measure() is None


# -- on a real decode -----------------------------------------------------------------------


def start_counting(executor: BatchedExecutor) -> Conversation:
    conv = executor.create(SamplingParams(temperature=0.0))
    conv.prompt("Count to a thousand: one, two,")
    return conv


def decode_once(executor: BatchedExecutor, conv: Conversation) -> None:
    """One decode (the count is decided before each), then queue the next token."""
    assert executor.infer_sync().ok
    conv.prompt([conv.sample()])
    if conv.token_count > 200:
        conv.rewind(150)


def native_threads(executor: BatchedExecutor) -> tuple[int, int]:
    """What llama.cpp decodes with: (threads, batch threads)."""
    return (
        llama_cpp.llama_n_threads(executor.context),
        llama_cpp.llama_n_threads_batch(executor.context),
    )


def test_a_busy_process_takes_a_core_and_gives_it_back(weights: LlamaWeights) -> None:
    load = ScriptedLoad()
    params = ContextParams(n_ctx=512, n_seq_max=2, n_threads=2)
    executor = BatchedExecutor(weights, params, outside_load=load)
    try:
        conv = start_counting(executor)
        decode_once(executor, conv)
        assert executor.threads == 2 and native_threads(executor) == (2, 2)
        load.cores = float(cores_available())  # every core we may use is busy
        decode_once(executor, conv)
        assert executor.threads == 1 and native_threads(executor) == (1, 1)
        assert executor.cpu_taken_by_others == cores_available()
        for cores in (None, float(cores_available()), None):  # the load holds
            load.cores = cores
            decode_once(executor, conv)
            assert executor.threads == 1, "the count must hold while the load holds"
        load.cores = 0.0  # it stops
        decode_once(executor, conv)
        assert executor.threads == 2 and native_threads(executor) == (2, 2)
        assert executor.stats.thread_changes == 2
    finally:
        executor.close()


def test_a_fixed_thread_count_stays_fixed(weights: LlamaWeights) -> None:
    load = ScriptedLoad(cores=float(cores_available()))
    params = ContextParams(n_ctx=512, n_seq_max=2, n_threads=2, adapt_threads=False)
    executor = BatchedExecutor(weights, params, outside_load=load)
    try:
        conv = start_counting(executor)
        for _ in range(3):
            decode_once(executor, conv)
        assert executor.threads == 2 and native_threads(executor) == (2, 2)
        assert executor.stats.thread_changes == 0 and load.measured == 0
    finally:
        executor.close()


@needs_linux_and_two_cores
def test_the_count_follows_the_measured_load_beside_a_busy_process(
    weights: LlamaWeights,
) -> None:
    """Real /proc/stat measuring: whatever else this machine runs, after every decode the
    count is what the measured load calls for, and llama.cpp decodes with it."""
    executor = BatchedExecutor(weights, ContextParams(n_ctx=512, n_seq_max=2, n_threads=2))
    measured: set[float] = set()
    try:
        conv = start_counting(executor)
        with competing_process():
            for _ in range(4):
                time.sleep(INTERVAL_SECONDS)  # a fresh measurement is due at the next decode
                for _ in range(3):
                    decode_once(executor, conv)
                    others = executor.cpu_taken_by_others
                    measured.add(others)
                    assert others >= 0.0
                    assert executor.threads == threads_left(2, cores_available(), others)
                    assert native_threads(executor) == (executor.threads, executor.threads)
        assert max(measured) > 0.0, "a busy process ran, but /proc/stat showed no other load"
    finally:
        executor.close()


def test_adapt_threads_must_be_a_bool() -> None:
    with pytest.raises(InvalidParamsError, match="adapt_threads must be true or false"):
        ContextParams(adapt_threads=1)  # type: ignore[arg-type]
