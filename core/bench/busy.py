"""A busy machine: the throughput rows again, beside one competing CPU-bound process.

Users run panechat beside a browser, an editor, a build. The competitor here is the simplest
such load: a Python busy loop, one process, at the same priority. Each row is measured idle and
busy in turn (idle, busy, idle, busy: a slow spell of the machine hits both), with the thread
count fixed as configured, fixed at one (what a core left free gives: the ceiling beside the
competitor) and adapting (``ContextParams.adapt_threads``), the pane defaults' sampling, and
full-length replies so every run decodes the same batches.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from core.bench.prompts import short_prompts
from core.bench.throughput import PANE_DEFAULT, executor_params, open_executor, run_batched
from core.chat import (
    ChatConfig,
    ChatEngine,
    ChatEngineGroup,
    EngineEvent,
    Frame,
    OpenChat,
    SendTurn,
)
from core.executor.executor import BatchedExecutor
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights
from core.templates.chat_template import ChatTemplate
from core.templates.template_choice import model_template

ROUNDS = 2
#: The app's default ``[ui] decode_nice``: its decode thread runs this much nicer than the UI.
APP_DECODE_NICE = 10
#: Time the competitor runs before a measurement, so the scheduler and our thread count have
#: settled (the thread count is decided every 0.5 s).
SETTLE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class BusyResult:
    conversations: int
    adapt_threads: bool
    idle_tokens_per_second: float
    busy_tokens_per_second: float
    busy_threads: int  # the thread count during the last busy run
    threads: int  # as configured

    @property
    def share_kept(self) -> float:
        return self.busy_tokens_per_second / self.idle_tokens_per_second


@contextmanager
def competing_process() -> Iterator[subprocess.Popen[bytes]]:
    """One CPU-bound process beside us, until the block ends."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(SETTLE_SECONDS)
        yield process
    finally:
        process.kill()
        process.wait()


def measure_busy(
    weights: LlamaWeights,
    params: ContextParams,
    conversations: int,
    tokens: int,
    rounds: int = ROUNDS,
) -> list[BusyResult]:
    """Tokens/s idle and beside a busy process: the thread count fixed as configured, fixed
    at one (where more are configured: the ceiling when the competitor leaves one core free),
    and adapting."""
    prompts = short_prompts(conversations)
    results = []
    settings = [replace(params, adapt_threads=False)]
    if params.threads > 1:
        settings.append(replace(params, n_threads=1, n_threads_batch=1, adapt_threads=False))
    settings.append(replace(params, adapt_threads=True))
    for base in settings:
        adapt = base.adapt_threads
        executor = open_executor(weights, executor_params(base, conversations, tokens))
        idle: list[float] = []
        busy: list[float] = []
        threads_busy = executor.threads
        try:
            for _ in range(rounds):
                time.sleep(SETTLE_SECONDS)  # our threads come back after the last busy run
                run_batched(executor, prompts[:1], 2, PANE_DEFAULT)  # the count is decided
                idle.append(
                    run_batched(
                        executor, prompts, tokens, PANE_DEFAULT, full_length=True
                    ).tokens_per_second
                )
                with competing_process():
                    run_batched(executor, prompts[:1], 2, PANE_DEFAULT)
                    busy.append(
                        run_batched(
                            executor, prompts, tokens, PANE_DEFAULT, full_length=True
                        ).tokens_per_second
                    )
                    threads_busy = executor.threads
        finally:
            executor.close()
        results.append(
            BusyResult(
                conversations,
                adapt,
                statistics.median(idle),
                statistics.median(busy),
                threads_busy,
                base.threads,
            )
        )
    return results


@dataclass(frozen=True, slots=True)
class EngineBusyResult:
    """The app's decode loop (a ChatEngine at the app's niceness), idle and busy."""

    chats: int
    adapt_threads: bool
    nice: int
    idle_tokens_per_second: float
    busy_tokens_per_second: float
    idle_ttft_median: float  # seconds from the turns to a chat's first text
    busy_ttft_median: float

    @property
    def share_kept(self) -> float:
        return self.busy_tokens_per_second / self.idle_tokens_per_second


def measure_busy_engine(
    weights: LlamaWeights,
    params: ContextParams,
    chats: int,
    tokens: int,
    nice: int = APP_DECODE_NICE,
    rounds: int = ROUNDS,
) -> list[EngineBusyResult]:
    """What the app's panes get: the decode loop at ``decode_nice``, idle and beside a busy
    process, with the thread count fixed and adapting. A fresh engine per run, since a
    thread's niceness only goes one way."""
    results = []
    for adapt in (False, True):
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(rounds):
            for busy in (False, True):
                context = replace(params, adapt_threads=adapt, n_seq_max=max(chats, 1))
                runs[busy].append(_engine_run(weights, context, chats, tokens, nice, busy))
        results.append(
            EngineBusyResult(
                chats,
                adapt,
                nice,
                statistics.median(r[0] for r in runs[False]),
                statistics.median(r[0] for r in runs[True]),
                statistics.median(r[1] for r in runs[False]),
                statistics.median(r[1] for r in runs[True]),
            )
        )
    return results


def _engine_run(
    weights: LlamaWeights, params: ContextParams, chats: int, tokens: int, nice: int, busy: bool
) -> tuple[float, float]:
    """(tokens/s, median time to first text) for one turn of every chat."""
    template = model_template(weights)
    if isinstance(template, ChatTemplate):
        template = replace(template, stop_strings=())  # every reply runs to max_tokens
    executor = BatchedExecutor(weights, params)
    first: dict[str, float] = {}
    finished = threading.Event()
    remaining = chats
    started = 0.0

    def emit(event: EngineEvent) -> None:
        nonlocal remaining
        if not isinstance(event, Frame):
            return
        for chat_id, delta in event.deltas.items():
            if delta.text and chat_id not in first:
                first[chat_id] = time.perf_counter() - started
            remaining -= delta.finished is not None
        if remaining <= 0:
            finished.set()

    engine = ChatEngineGroup(ChatEngine(executor, template), emit, nice=nice)
    try:
        for i in range(chats):
            sampling = replace(PANE_DEFAULT, seed=i)
            engine.submit(OpenChat(f"c{i}", ChatConfig(f"c{i}", "", sampling, tokens)))
        engine.start()
        with competing_process() if busy else contextlib.nullcontext():
            time.sleep(SETTLE_SECONDS)
            started = time.perf_counter()
            turns = short_prompts(chats)
            engine.submit(*(SendTurn(f"c{i}", turn) for i, turn in enumerate(turns)))
            if not finished.wait(600):
                raise RuntimeError("the decode loop did not finish the busy-machine replies")
            seconds = time.perf_counter() - started
        return engine.tokens_sampled / seconds, statistics.median(first.values())
    finally:
        engine.shutdown()
        executor.close()
