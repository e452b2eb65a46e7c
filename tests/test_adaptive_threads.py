"""The thread count gives way to a busy process and comes back when it stops (real decode)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from core import BatchedExecutor, ContextParams, InvalidParamsError, SamplingParams
from core.machine import cores_available

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or cores_available() < 2, reason="needs Linux and 2 cores or more"
)


@contextmanager
def busy_process() -> Iterator[None]:
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait()


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


def test_a_busy_process_takes_a_core_and_gives_it_back(
    make_executor: Callable[..., BatchedExecutor],
) -> None:
    executor = make_executor(n_ctx=512, n_seq_max=2)
    configured = executor.params.threads
    assert executor.threads == configured
    with busy_process():
        assert wait_until(lambda: executor.threads == configured - 1, executor, 8), (
            f"still {executor.threads} threads with a busy process "
            f"(others took {executor.cpu_taken_by_others:.2f} cores)"
        )
        assert executor.cpu_taken_by_others >= 0.6
        decode_for(executor, 1.0)
        assert executor.threads == configured - 1, "the count must hold while the load holds"
    assert wait_until(lambda: executor.threads == configured, executor, 8)
    assert executor.stats.thread_changes >= 2


def test_a_fixed_thread_count_stays_fixed(make_executor: Callable[..., BatchedExecutor]) -> None:
    executor = make_executor(n_ctx=512, n_seq_max=2, adapt_threads=False)
    with busy_process():
        decode_for(executor, 1.5)
    assert executor.threads == executor.params.threads
    assert executor.stats.thread_changes == 0


def test_adapt_threads_must_be_a_bool() -> None:
    with pytest.raises(InvalidParamsError, match="adapt_threads must be true or false"):
        ContextParams(adapt_threads=1)  # type: ignore[arg-type]
