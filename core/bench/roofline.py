"""Throughput on a model of the size people run (a synthetic one: no download) against the
memory roofline measured in the same run.

A decode step reads every weight once whatever the batch, so one sequence can go at most
``bandwidth ÷ bytes per step`` steps a second; a batch of N gets up to N tokens per step for
about the same bytes, which is why batching pays most on these models. Issue #27's targets:
N=1 at ≥ 80% of the roofline, N=8 at ≥ 5x the sequential rate (N=1's)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.bench.memory_bandwidth import read_bandwidth
from core.bench.prompts import short_prompts
from core.bench.synthetic_model import ModelShape, write_synthetic_model
from core.bench.throughput import (
    executor_params,
    open_baseline,
    open_executor,
    run_baseline,
    run_batched,
)
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights

#: Targets of issue #27 on the 1B shape.
ROOFLINE_TARGET = 0.80
BATCH_SPEEDUP_TARGET = 5.0
BATCH_TARGET_SIZE = 8


@dataclass(frozen=True, slots=True)
class RooflineRow:
    """One batch size: generated tokens per second after each chat's first token (decode
    steps only, the prompts' prefill left out), and the time to the first tokens."""

    conversations: int
    tokens: int
    decode_tokens_per_second: float
    ttft_median: float

    @property
    def steps_per_second(self) -> float:
        return self.decode_tokens_per_second / self.conversations


@dataclass(frozen=True, slots=True)
class RooflineResult:
    shape: ModelShape
    file_bytes: int
    bytes_per_step: int
    bandwidth: float  # bytes per second, read by the decode's thread count
    threads: int
    rows: tuple[RooflineRow, ...]
    llama_single: float  # llama-cpp-python's own Llama, one sequence: decode tok/s

    @property
    def roofline_steps(self) -> float:
        """Decode steps per second if a step took only the time to read its weights."""
        return self.bandwidth / self.bytes_per_step

    def row(self, conversations: int) -> RooflineRow | None:
        return next((r for r in self.rows if r.conversations == conversations), None)

    def speedup(self, row: RooflineRow) -> float | None:
        """Its tokens per second over one sequence's (the sequential baseline)."""
        single = self.row(1)
        if single is None or single.decode_tokens_per_second <= 0:
            return None
        return row.decode_tokens_per_second / single.decode_tokens_per_second


def measure_roofline(
    shape: ModelShape,
    base: ContextParams,
    concurrency: list[int],
    tokens: int,
    folder: Path | None = None,
) -> RooflineResult:
    """Write a synthetic model of ``shape`` (into ``folder``, else a temporary one), measure
    the memory's read bandwidth with the decode's thread count, then decode ``tokens`` per
    chat at each batch size in ``concurrency``."""
    with tempfile.TemporaryDirectory(prefix="panechat-synthetic-") as scratch:
        path = write_synthetic_model(Path(folder or scratch) / "synthetic.gguf", shape)
        threads = base.threads
        bandwidth = read_bandwidth(threads)
        rows = []
        with LlamaWeights.load(path) as weights:
            llm = open_baseline(str(path), base, weights.layout)
            try:
                alone = run_baseline(llm, short_prompts(1), tokens)
            finally:
                llm.close()
            decode_seconds = alone.seconds - alone.ttft_median
            llama_single = (alone.tokens - 1) / decode_seconds if alone.tokens > 1 else 0.0
            for n in concurrency:
                executor = open_executor(weights, executor_params(base, n, tokens))
                try:
                    run = run_batched(executor, short_prompts(n), tokens, full_length=True)
                finally:
                    executor.close()
                decode_seconds = run.seconds - run.ttft_median
                decoded = run.tokens - n  # each chat's first token came with the prefill
                rate = decoded / decode_seconds if decode_seconds > 0 and decoded > 0 else 0.0
                rows.append(RooflineRow(n, run.tokens, rate, run.ttft_median))
        return RooflineResult(
            shape,
            path.stat().st_size,
            shape.weight_bytes(),
            bandwidth,
            threads,
            tuple(rows),
            llama_single,
        )
