"""Throughput on a model of the size people run (a synthetic one: no download) against the
memory roofline measured in the same run.

A decode step reads every weight once whatever the batch, so one sequence can go at most
``bandwidth ÷ bytes per step`` steps a second; a batch of N gets up to N tokens per step for
about the same bytes, which is why batching pays most on these models. Issue #27's targets:
N=1 at ≥ 80% of the roofline, N=8 at ≥ 5x the sequential rate (N=1's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.bench.decode_workload import measure_workload
from core.bench.memory_bandwidth import read_bandwidth
from core.bench.prompts import short_prompts
from core.bench.synthetic_model import ModelShape
from core.bench.throughput import open_baseline, run_baseline
from core.executor.params import ContextParams
from core.models.weights import LlamaWeights

#: Targets of issue #27 on the 1B shape.
ROOFLINE_TARGET = 0.80
BATCH_SPEEDUP_TARGET = 5.0
BATCH_TARGET_SIZE = 8
#: Prompt tokens per chat: llama-batched-bench's ``-npp 16``.
PROMPT_TOKENS = 16


@dataclass(frozen=True, slots=True)
class RooflineRow:
    """One batch size: generated tokens per second once every prompt is in (decode steps
    only: llama-batched-bench's S_TG, on its workload), and how long the prompts took."""

    conversations: int
    tokens: int  # generated, all chats together
    decode_tokens_per_second: float
    prefill_seconds: float

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
    path: Path,
    shape: ModelShape,
    base: ContextParams,
    concurrency: list[int],
    tokens: int,
) -> RooflineResult:
    """On the synthetic model of ``shape`` at ``path``: measure the memory's read bandwidth
    with the decode's thread count, then llama-batched-bench's workload (16 prompt tokens,
    ``tokens`` generated per chat) at each batch size in ``concurrency``."""
    threads = base.threads
    bandwidth = read_bandwidth(threads)
    with LlamaWeights.load(path) as weights:
        llm = open_baseline(str(path), base, weights.layout)
        try:
            alone = run_baseline(llm, short_prompts(1), tokens)
        finally:
            llm.close()
        decode_seconds = alone.seconds - alone.ttft_median
        llama_single = (alone.tokens - 1) / decode_seconds if alone.tokens > 1 else 0.0
        timings = measure_workload(weights, base, concurrency, PROMPT_TOKENS, tokens)
    rows = tuple(
        RooflineRow(
            t.conversations,
            t.conversations * t.generated_tokens,
            t.decode_rate,
            t.prefill_seconds,
        )
        for t in timings
    )
    return RooflineResult(
        shape,
        path.stat().st_size,
        shape.weight_bytes(),
        bandwidth,
        threads,
        rows,
        llama_single,
    )
